package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/internal/fixture"
)

// critestDir is where scripts/setup-critest.sh builds critest and writes
// the mirrors of its test images (BERTH_CRITEST_DIR overrides).
func critestDir() string {
	if d := os.Getenv("BERTH_CRITEST_DIR"); d != "" {
		return d
	}
	return "/var/lib/berth-critest"
}

// critestSkip are the specs this run leaves out, and why: NRI needs an
// NRI socket berth does not serve; this kernel has no AppArmor.
const critestSkip = `NRI|AppArmor|apparmor`

// critestKnown are the specs berth fails here, each with its cause; any
// other failure fails the test. (The issue that tracks each says what is
// left; see docs/design.md.)
var critestKnown = map[string]string{
	"public image with digest should be pulled and removed": "its image is pinned by a digest of gcr.io that no offline build can give",
	"runtime should support NamespaceMode_POD":              "the kubelet's mapping (0 1000 100000) is replaced by a range of berth's ID pool",
}

// knownFailure is the cause of a known failure of the spec named leaf
// (its text, maybe followed by labels such as [Conformance]).
func knownFailure(leaf string) (string, bool) {
	for k, why := range critestKnown {
		if leaf == k || strings.HasPrefix(leaf, k+" [") {
			return why, true
		}
	}
	return "", false
}

// specReport is what is read of ginkgo's JSON report.
type specReport struct {
	ContainerHierarchyTexts []string
	LeafNodeText            string
	State                   string
	Failure                 struct{ Message string }
}

// The Kubernetes validation suite against berth-cri (a daemon of its own),
// offline: its images come from the local registry through berth's
// mirrors, and no other registry is reached, pods get the
// tests' CNI network. Every spec must pass but the known failures above
// and those skipped.
func TestCritest(t *testing.T) {
	fixture.RequireRoot(t)
	dir := critestDir()
	critest := filepath.Join(dir, "bin", "critest")
	mirrorFlags, err := os.ReadFile(filepath.Join(dir, "mirrors"))
	_, serr := os.Stat(critest)
	fixture.Require(t, err == nil && serr == nil, "needs critest and its images (scripts/setup-critest.sh builds them)")

	root := fixture.TempDir(t)
	s := startDaemon(t, root, append([]string{"--allow-privileged", "--allow-host-namespaces", "--allow-unfiltered-seccomp", "--allow-setid-images"}, strings.Fields(string(mirrorFlags))...)...)

	report := filepath.Join(t.TempDir(), "report.json")
	// Two at a time (critest runs ginkgo for that, from PATH).
	args := []string{"-runtime-endpoint", "unix://" + s.sock, "-image-endpoint", "unix://" + s.sock,
		"-parallel", "2", "-ginkgo.skip", critestSkip, "-ginkgo.no-color", "-ginkgo.json-report", report}
	if focus := os.Getenv("BERTH_CRITEST_FOCUS"); focus != "" {
		// A part of the suite, while working on it.
		args = append(args, "-ginkgo.focus", focus)
	}
	cmd := exec.CommandContext(context.Background(), critest, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(dir, "bin")+":"+os.Getenv("PATH"))
	out, runErr := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Ran ") || strings.Contains(line, "Passed |") {
			t.Logf("critest: %s", line)
		}
	}
	data, err := os.ReadFile(report)
	require.NoError(t, err, "no report; critest said:\n%s", out)
	// Kept beside critest for the record (scripts/critest-containerd.sh
	// keeps containerd's there).
	_ = os.WriteFile(filepath.Join(dir, "critest-berth.json"), data, 0o644)
	var suites []struct{ SpecReports []specReport }
	require.NoError(t, json.Unmarshal(data, &suites))
	var failed, skipped []string
	for _, su := range suites {
		for _, sp := range su.SpecReports {
			name := strings.Join(append(sp.ContainerHierarchyTexts, sp.LeafNodeText), " ")
			switch sp.State {
			case "failed", "panicked", "timedout", "aborted", "interrupted":
				if why, ok := knownFailure(sp.LeafNodeText); ok {
					t.Logf("known failure: %s (%s)", name, why)
					continue
				}
				failed = append(failed, fmt.Sprintf("%s: %s", name, strings.TrimSpace(sp.Failure.Message)))
			case "skipped":
				if sp.LeafNodeText != "" && !strings.Contains(sp.LeafNodeText, "benchmark") {
					skipped = append(skipped, fmt.Sprintf("%s: %s", name, firstLine(sp.Failure.Message)))
				}
			}
		}
	}
	sort.Strings(skipped)
	for _, s := range skipped {
		t.Logf("skipped: %s", s)
	}
	sort.Strings(failed)
	require.Empty(t, failed, "critest failures (run error: %v)", runErr)
	// Critest removed its pods: nothing of theirs is left on the host.
	pods, err := s.rt.ListPodSandbox(context.Background(), &cri.ListPodSandboxRequest{})
	require.NoError(t, err)
	require.Empty(t, pods.Items)
	require.Empty(t, leftovers(t, root))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
