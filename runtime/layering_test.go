package runtime

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// managerOwners are the only packages that may open a volume.Manager: the
// runtime holds the one manager of a state directory, under its one policy
// (volumes and root disks alike), and package volume defines it. Test
// files count too: a second manager on the runtime's records, even in a
// test, is what this rule is about.
var managerOwners = map[string]bool{"runtime": true, "volume": true}

// No package but the runtime (and volume itself) calls volume.OpenManager:
// a backend never keeps a manager or a policy of its own.
func TestOneVolumeManager(t *testing.T) {
	root := moduleRoot(t)
	var offenders []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		if managerOwners[filepath.ToSlash(rel)] {
			return nil
		}
		uses, err := opensVolumeManager(path)
		if err != nil {
			return err
		}
		for _, pos := range uses {
			r, _ := filepath.Rel(root, path)
			offenders = append(offenders, r+":"+strconv.Itoa(pos.Line))
		}
		return nil
	})
	require.NoError(t, err)
	require.Empty(t, offenders, "volume.OpenManager outside runtime/ and volume/: root disks and volumes go through the runtime's one manager")
}

// moduleRoot walks up from the test's directory to go.mod.
func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "no go.mod above the test's directory")
		dir = parent
	}
}

const volumePkg = "github.com/berthrun/berth/volume"

// opensVolumeManager returns where the file refers to volume.OpenManager,
// whatever name (or dot) it imports package volume under.
func opensVolumeManager(path string) ([]token.Position, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	dot := false
	for _, imp := range f.Imports {
		p, err := strconv.Unquote(imp.Path.Value)
		if err != nil || p != volumePkg {
			continue
		}
		switch {
		case imp.Name == nil:
			names["volume"] = true
		case imp.Name.Name == ".":
			dot = true
		case imp.Name.Name != "_":
			names[imp.Name.Name] = true
		}
	}
	if len(names) == 0 && !dot {
		return nil, nil
	}
	var out []token.Position
	fields := map[*ast.Ident]bool{} // x.OpenManager of some other x
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			fields[n.Sel] = true
			if x, ok := n.X.(*ast.Ident); ok && names[x.Name] && n.Sel.Name == "OpenManager" {
				out = append(out, fset.Position(n.Pos()))
			}
		case *ast.Ident:
			if dot && !fields[n] && n.Name == "OpenManager" {
				out = append(out, fset.Position(n.Pos()))
			}
		}
		return true
	})
	return out, nil
}

// The check sees the call under any import name, and only there.
func TestOpensVolumeManager(t *testing.T) {
	dir := t.TempDir()
	for src, want := range map[string]int{
		"package p\nimport \"" + volumePkg + "\"\nvar _, _ = volume.OpenManager(\"d\", volume.Policy{}, nil)\n": 1,
		"package p\nimport v \"" + volumePkg + "\"\nvar f = v.OpenManager\n":                                    1,
		"package p\nimport . \"" + volumePkg + "\"\nvar f, g = OpenManager, x.OpenManager\n":                    1,
		"package p\nimport \"" + volumePkg + "\"\nvar f = volume.Policy{}\nvar g = other.OpenManager\n":         0,
		"package p\nvar f = volume.OpenManager\n":                                                               0, // some other package named volume
	} {
		p := filepath.Join(dir, "f.go")
		require.NoError(t, os.WriteFile(p, []byte(src), 0o644))
		uses, err := opensVolumeManager(p)
		require.NoError(t, err)
		require.Len(t, uses, want, src)
	}
}
