package berth

import (
	"encoding/json"
	"io"
	"os/exec"
	"path"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/berthrun/berth"

// composed are the imports of one backend by another that the design
// documents: the parallels backend runs its containers on the embedded
// engine.
var composed = map[string]bool{
	"backends/parallels -> backends/libcontainer": true,
}

// under reports whether pkg (relative to the module) is dir or below it.
func under(pkg, dir string) bool {
	return pkg == dir || strings.HasPrefix(pkg, dir+"/")
}

// layerRule returns why pkg may not import imp, or "" when it may. Both
// are relative to the module.
func layerRule(pkg, imp string, isMain bool) string {
	backend := func(p string) string {
		if under(p, "backends") && p != "backends" {
			return strings.SplitN(p, "/", 3)[1]
		}
		return ""
	}
	core := under(pkg, "runtime") || under(pkg, "volume") || under(pkg, "image") || under(pkg, "internal") || under(pkg, "cri")
	switch {
	case core && (backend(imp) != "" || under(imp, "examples")):
		return "runtime/, volume/, image/, cri/ and internal/ import no backend and no example"
	case (under(pkg, "volume") || under(pkg, "image")) && under(imp, "runtime"):
		return "volume/ and image/ import nothing of runtime/"
	case pkg == "runtime/driver":
		return "runtime/driver is the contract: it imports no other package of berth"
	case backend(pkg) != "" && backend(imp) != "" && backend(pkg) != backend(imp) &&
		!composed["backends/"+backend(pkg)+" -> backends/"+backend(imp)]:
		return "a backend imports no other backend, except through a documented composition"
	case under(pkg, "internal") && !isMain && !under(pkg, "internal/fixture") && imp != "runtime/driver" &&
		(under(imp, "runtime") || under(imp, "volume") || under(imp, "image")):
		return "internal/ libraries import none of the layers above them but the contract's types"
	}
	return ""
}

func TestLayerRule(t *testing.T) {
	for _, c := range []struct {
		pkg, imp string
		main, ok bool
	}{
		{"runtime", "backends/libcontainer", false, false},
		{"runtime/runtimetest", "backends/docker", false, false},
		{"volume", "runtime", false, false},
		{"image/glance", "runtime/driver", false, false},
		{"image", "examples/berthctl", false, false},
		{"cri", "backends/libcontainer", false, false},
		{"cri", "image/registry", false, true},
		{"runtime/driver", "internal/fsutil", false, false},
		{"backends/docker", "backends/libcontainer", false, false},
		{"backends/libcontainer", "backends/parallels", false, false},
		{"internal/loop", "volume", false, false},
		{"internal/mountns", "runtime", false, false},
		{"internal/mountns", "runtime/driver", false, true},
		{"backends/parallels", "backends/libcontainer", false, true},
		{"backends/docker", "runtime", false, true},
		{"runtime", "volume", false, true},
		{"internal/fixture/seccompprofile", "runtime", true, true},
		{"examples/berthctl", "backends/docker", true, true},
	} {
		got := layerRule(c.pkg, c.imp, c.main)
		require.Equalf(t, c.ok, got == "", "%s -> %s: %q", c.pkg, c.imp, got)
	}
}

// TestLayering checks every package of the module, its tests included,
// against the rules in docs/design.md.
func TestLayering(t *testing.T) {
	cmd := exec.Command("go", "list", "-tags=seccomp", "-json=ImportPath,Name,Imports,TestImports,XTestImports", "./...")
	out, err := cmd.Output()
	require.NoError(t, err, "go list")
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p struct {
			ImportPath, Name                   string
			Imports, TestImports, XTestImports []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else {
			require.NoError(t, err)
		}
		pkg := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		for _, imp := range append(append(p.Imports, p.TestImports...), p.XTestImports...) {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			rel := strings.TrimPrefix(imp, module+"/")
			if why := layerRule(pkg, rel, p.Name == "main"); why != "" {
				t.Errorf("%s imports %s: %s", path.Join(module, pkg), imp, why)
			}
		}
		seen++
	}
	require.Greater(t, seen, 20, "go list saw too few packages")
}
