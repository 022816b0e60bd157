package docker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/berthrun/berth/runtime/driver"
)

// ensureImage makes the image of src present in the daemon and returns the
// ID to create from. Docker never sees the tenant's archive: berth loads an
// archive it wrote itself from its store, untagged, so the load can move no
// tag; the daemon's tags are compared before and after all the same, and a
// tag that came to name the loaded image is put back and reported
// (data-loss).
func (r *Runtime) ensureImage(ctx context.Context, src *driver.ImageSource) (string, error) {
	id := src.ConfigDigest
	if _, err := r.eng.ImageInspect(ctx, id); err == nil {
		return id, nil
	}
	// The image may go again between its load and the check, with the
	// last container of another create or runtime that used it (see
	// releaseImage): load it again, a few times.
	for attempt := 0; ; attempt++ {
		if err := r.loadImage(ctx, src); err != nil {
			return "", err
		}
		_, err := r.eng.ImageInspect(ctx, id)
		if err == nil {
			return id, nil
		}
		if attempt == 2 {
			return "", fmt.Errorf("image %s: the daemon did not load it as %s: %w", src.Digest, id, errdefs.ErrUnknown)
		}
	}
}

// loadImage loads the archive berth writes of src into the daemon,
// checking that no tag moved.
func (r *Runtime) loadImage(ctx context.Context, src *driver.ImageSource) error {
	id := src.ConfigDigest
	before, err := r.tags(ctx)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(src.WriteArchive(ctx, pw)) }()
	res, err := r.eng.ImageLoad(ctx, pr, client.ImageLoadWithQuiet(true))
	if err != nil {
		pr.CloseWithError(err)
		return fmt.Errorf("load image %s: %w", src.Digest, classify(err))
	}
	loadErr := readLoad(res)
	res.Close()
	pr.Close()
	after, err := r.tags(ctx)
	if err != nil {
		return err
	}
	if moved := movedTo(before, after, id); len(moved) > 0 {
		var restoreErrs []string
		for _, tag := range moved {
			if _, err := r.eng.ImageTag(ctx, client.ImageTagOptions{Source: before[tag], Target: tag}); err != nil {
				restoreErrs = append(restoreErrs, err.Error())
			}
		}
		return fmt.Errorf("loading image %s moved the daemon's tags %s (put back: %t): %w", src.Digest, strings.Join(moved, ", "), len(restoreErrs) == 0, errdefs.ErrDataLoss)
	}
	if loadErr != nil {
		return fmt.Errorf("load image %s: %w", src.Digest, loadErr)
	}
	return nil
}

// readLoad drains the daemon's load messages and returns the error one
// reports.
func readLoad(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.Error != "" {
			return fmt.Errorf("%s: %w", m.Error, errdefs.ErrInvalidArgument)
		}
	}
	return sc.Err()
}

// tags maps every tag the daemon holds to its image ID.
func (r *Runtime) tags(ctx context.Context) (map[string]string, error) {
	res, err := r.eng.ImageList(ctx, client.ImageListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", classify(err))
	}
	out := map[string]string{}
	for _, im := range res.Items {
		for _, t := range im.RepoTags {
			if t != "<none>:<none>" {
				out[t] = im.ID
			}
		}
	}
	return out, nil
}

// movedTo lists the tags of before that named another image and name id
// in after: what loading id could have moved. Tags the operator moves
// elsewhere meanwhile are not berth's doing and are left alone.
func movedTo(before, after map[string]string, id string) []string {
	var moved []string
	for tag, was := range before {
		if was != id && after[tag] == id {
			moved = append(moved, tag)
		}
	}
	sort.Strings(moved)
	return moved
}

// releaseImage removes from the daemon an image berth loaded from its store
// once no container uses it, so that deleted containers leave no "<none>"
// images behind. The daemon is the arbiter: it refuses to remove an image
// any container (running or not, berth's or not) uses (conflict), and a
// create that finds the image gone meanwhile loads it again (Create). An
// image someone tagged since is theirs too and stays. Best effort: the
// container is deleted whatever becomes of its image.
func (r *Runtime) releaseImage(ctx context.Context, id string) {
	res, err := r.eng.ImageInspect(ctx, id)
	if err != nil {
		return
	}
	for _, t := range res.RepoTags {
		if t != "" && t != "<none>:<none>" {
			return
		}
	}
	_, _ = r.eng.ImageRemove(ctx, id, client.ImageRemoveOptions{})
}
