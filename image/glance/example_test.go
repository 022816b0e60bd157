package glance_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/glance"
	"github.com/berthrun/berth/image/imagetest"
)

// Nova's snapshot path: one host pushes an image to Glance, another pulls
// it under the name it chooses. Needs glance-api at 127.0.0.1:9292
// (scripts/setup-glance.sh starts it).
func Example() {
	ctx := context.Background()
	work, _ := os.MkdirTemp("", "berth-example-")
	defer os.RemoveAll(work)

	// The first host's store holds app:1.
	local, _ := image.Open(filepath.Join(work, "host-a"))
	im := imagetest.NewImage([][]byte{imagetest.Tar(imagetest.File("etc/motd", "hello\n"))}, "/bin/sh")
	im.Tags = []string{"app:1"}
	archive := filepath.Join(work, "app.tar")
	_ = os.WriteFile(archive, imagetest.DockerSave(im), 0o644)
	if _, err := local.Import(ctx, archive, image.ImportOptions{Tags: image.TagPolicy{Expect: []string{"app:1"}}}); err != nil {
		fmt.Println(err)
		return
	}

	id, err := glance.Push(ctx, "http://127.0.0.1:9292", local, "app:1", glance.PushOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer glance.Delete(ctx, "http://127.0.0.1:9292", id, glance.Options{})

	// The second host names it itself: the archive's own tag is skipped.
	other, _ := image.Open(filepath.Join(work, "host-b"))
	res, err := glance.Pull(ctx, "http://127.0.0.1:9292", id, other, glance.PullOptions{
		Import: image.ImportOptions{Tags: image.TagPolicy{Name: "from-glance/app:1"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range res.Tags {
		fmt.Println(t.Action, t.Ref)
	}
	a, _ := local.Get(ctx, "app:1")
	b, _ := other.Get(ctx, "from-glance/app:1")
	fmt.Println("same image:", a.Digest == b.Digest)
	// Output:
	// created from-glance/app:1
	// skipped app:1
	// same image: true
}
