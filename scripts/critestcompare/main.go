// Command critestcompare compares two critest runs from their ginkgo JSON
// reports (critest -ginkgo.json-report): berth-cri's and containerd's, as
// TestCritest and scripts/critest-containerd.sh write them. It prints each
// run's counts and every spec whose outcome differs, and exits 1 when a
// spec the other runtime passes is not passed by berth.
//
//	go run ./scripts/critestcompare BERTH.json CONTAINERD.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

// spec is what the comparison reads of a ginkgo spec report.
type spec struct {
	ContainerHierarchyTexts []string
	LeafNodeText            string
	LeafNodeType            string
	State                   string
}

type suite struct {
	SpecReports []spec
}

// load reads a report as spec name -> state, the specs ("It") only.
func load(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var suites []suite
	if err := json.Unmarshal(b, &suites); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]string{}
	for _, s := range suites {
		for _, r := range s.SpecReports {
			if r.LeafNodeType != "It" {
				continue
			}
			out[strings.Join(append(slices.Clone(r.ContainerHierarchyTexts), r.LeafNodeText), " ")] = r.State
		}
	}
	return out, nil
}

func counts(m map[string]string) string {
	c := map[string]int{}
	for _, st := range m {
		c[st]++
	}
	ran := len(m) - c["skipped"] - c["pending"]
	return fmt.Sprintf("ran %d of %d: %d passed, %d failed, %d skipped", ran, len(m), c["passed"], c["failed"], c["skipped"])
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: critestcompare BERTH.json OTHER.json")
		os.Exit(2)
	}
	berth, err := load(os.Args[1])
	if err == nil {
		var other map[string]string
		if other, err = load(os.Args[2]); err == nil {
			os.Exit(compare(berth, other))
		}
	}
	fmt.Fprintln(os.Stderr, "critestcompare:", err)
	os.Exit(2)
}

func compare(berth, other map[string]string) int {
	fmt.Printf("berth: %s\nother: %s\n", counts(berth), counts(other))
	names := make([]string, 0, len(other))
	for n := range other {
		names = append(names, n)
	}
	for n := range berth {
		if _, ok := other[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	missed := 0
	for _, n := range names {
		b, o := berth[n], other[n]
		if b == o {
			continue
		}
		mark := " "
		if o == "passed" {
			mark = "!"
			missed++
		}
		fmt.Printf("%s berth %-8s other %-8s %s\n", mark, orNone(b), orNone(o), n)
	}
	if missed > 0 {
		fmt.Printf("berth does not pass %d spec(s) the other passes (marked !)\n", missed)
		return 1
	}
	fmt.Println("berth passes every spec the other passes")
	return 0
}

func orNone(s string) string {
	if s == "" {
		return "absent"
	}
	return s
}
