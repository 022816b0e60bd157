// Command codesize prints the longest functions of the module (tests
// excluded) and its files over 500 lines, the figures issue reviews quote:
//
//	go run ./scripts/codesize [-n 15] [DIR]
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type fn struct {
	name string
	n    int
}

func main() {
	n := flag.Int("n", 15, "how many functions to list")
	flag.Parse()
	root := "."
	if flag.NArg() > 0 {
		root = flag.Arg(0)
	}
	fns, files, err := measure(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sort.Slice(fns, func(i, j int) bool { return fns[i].n > fns[j].n })
	fmt.Printf("longest %d functions (tests excluded):\n", *n)
	for _, f := range fns[:min(*n, len(fns))] {
		fmt.Printf("%5d %s\n", f.n, f.name)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].n > files[j].n })
	fmt.Println("files over 500 lines:")
	for _, f := range files {
		if f.n > 500 {
			fmt.Printf("%5d %s\n", f.n, f.name)
		}
	}
}

// measure returns the length of every function outside tests, and of
// every Go file, under root.
func measure(root string) (fns, files []fn, err error) {
	fset := token.NewFileSet()
	err = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() && (info.Name() == ".git" || info.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		b, _ := os.ReadFile(p)
		files = append(files, fn{rel, strings.Count(string(b), "\n")})
		if !strings.HasSuffix(p, "_test.go") {
			fns = append(fns, funcs(fset, f, rel)...)
		}
		return nil
	})
	return fns, files, err
}

// funcs returns the length of each function of f, named Type.Method for
// methods.
func funcs(fset *token.FileSet, f *ast.File, rel string) []fn {
	var out []fn
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
		name := fd.Name.Name
		if fd.Recv != nil && len(fd.Recv.List) > 0 {
			t := fd.Recv.List[0].Type
			if s, ok := t.(*ast.StarExpr); ok {
				t = s.X
			}
			if id, ok := t.(*ast.Ident); ok {
				name = id.Name + "." + name
			}
		}
		out = append(out, fn{rel + ":" + name, n})
	}
	return out
}
