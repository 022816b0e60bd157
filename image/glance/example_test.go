package glance_test

import (
	"context"
	"fmt"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/glance"
)

// Nova's snapshot path: push an image to Glance, pull it on another host
// under a name the host chooses.
func Example() {
	ctx := context.Background()
	local, _ := image.Open("/var/lib/berth/images")
	id, err := glance.Push(ctx, "http://127.0.0.1:9292", local, "app:1", glance.PushOptions{})
	if err != nil {
		panic(err)
	}
	other, _ := image.Open("/var/lib/berth-other/images")
	res, err := glance.Pull(ctx, "http://127.0.0.1:9292", id, other, glance.PullOptions{
		Import: image.ImportOptions{Tags: image.TagPolicy{Name: "from-glance/app:1"}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Images[0].Digest)
}
