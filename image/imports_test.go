package image_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/berthrun/berth/internal/fixture"
)

// TestNoBackendImports: the image packages sit below the runtime and never
// reach a backend (DESIGN.md's layering).
func TestNoBackendImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	out, err := exec.Command(goTool, "list", "-deps", "github.com/berthrun/berth/image/...").CombinedOutput()
	fixture.Require(t, err == nil, fmt.Sprintf("needs go list: %v: %s", err, out))
	for _, p := range strings.Fields(string(out)) {
		require.False(t, strings.HasPrefix(p, "github.com/berthrun/berth/backends") || strings.HasPrefix(p, "github.com/berthrun/berth/runtime"),
			"image imports %s", p)
	}
}
