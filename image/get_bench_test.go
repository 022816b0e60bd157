package image_test

import (
	"fmt"
	"testing"

	"github.com/berthrun/berth/image"
	. "github.com/berthrun/berth/image/imagetest"
)

// storeOfFive is a store with five small images, tagged img0:1...img4:1,
// as critest's image benchmarks leave it.
func storeOfFive(b *testing.B) *image.Store {
	s, err := image.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for i := range 5 {
		im := NewImage([][]byte{Gzip(Tar(File(fmt.Sprint("f", i), "x")))}, "/bin/sh")
		if err := pullImage(s, im, fmt.Sprintf("img%d:1", i), image.Limits{}); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// Get, as the CRI's ImageStatus calls it.
func BenchmarkGet(b *testing.B) {
	s := storeOfFive(b)
	for b.Loop() {
		if _, err := s.Get(ctx, "img3:1"); err != nil {
			b.Fatal(err)
		}
	}
}

// List, as the CRI's ListImages calls it.
func BenchmarkList(b *testing.B) {
	s := storeOfFive(b)
	for b.Loop() {
		if l, err := s.List(ctx); err != nil || len(l) != 5 {
			b.Fatal(len(l), err)
		}
	}
}
