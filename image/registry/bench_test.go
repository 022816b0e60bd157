package registry_test

import (
	"archive/tar"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/imagetest"
	"github.com/berthrun/berth/image/registry"
)

// BenchmarkPullRegistry pulls an image from a real registry into a fresh
// store per iteration: berth's side of scripts/bench-registry.sh, which
// times skopeo and docker next to it.
//
// The image is BERTH_BENCH_IMAGE when set (any reference the client may
// reach); otherwise one generated here (BERTH_BENCH_SIZE bytes of file
// content, default 64 MiB, in 4 gzip layers, held in memory while it is
// pushed) and pushed once to the registry at BERTH_REGISTRY (default
// 127.0.0.1:5111, which scripts/setup-registry.sh starts) under a
// repository of its own, whose manifest and blob links are deleted at
// the end. Without
// BERTH_BENCH_IMAGE and with no registry answering, the benchmark is
// skipped.
//
// Bytes per operation are the bytes read from the registry (manifest,
// config and compressed layers).
func BenchmarkPullRegistry(b *testing.B) {
	ctx := context.Background()
	c, err := registry.New(registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ref := os.Getenv("BERTH_BENCH_IMAGE")
	name := "image"
	if ref == "" {
		host := os.Getenv("BERTH_REGISTRY")
		if host == "" {
			host = "127.0.0.1:5111"
		}
		if err := benchRegistryAnswers(host); err != nil {
			b.Skipf("no registry at %s (scripts/setup-registry.sh starts it; BERTH_REGISTRY overrides) and no BERTH_BENCH_IMAGE: %v", host, err)
		}
		size := int64(64 << 20)
		if s := os.Getenv("BERTH_BENCH_SIZE"); s != "" {
			if size, err = strconv.ParseInt(s, 10, 64); err != nil || size <= 0 {
				b.Fatalf("BERTH_BENCH_SIZE=%q: not a positive number of bytes", s)
			}
		}
		ref = benchPushImage(b, c, host, size)
		name = fmt.Sprintf("%dMiB", size>>20)
		if size < 1<<20 {
			name = fmt.Sprintf("%dB", size)
		}
	}
	// The parent runs once: the image is pushed once for all the
	// iterations the sub-benchmark takes.
	b.Run(name, func(b *testing.B) {
		dir := b.TempDir()
		var read int64
		n := 0
		for b.Loop() {
			b.StopTimer()
			n++
			root := filepath.Join(dir, strconv.Itoa(n))
			b.StartTimer()
			store, err := image.Open(root)
			if err != nil {
				b.Fatal(err)
			}
			res, err := c.Pull(ctx, store, ref, image.ImportOptions{})
			if err != nil {
				b.Fatal(err)
			}
			read = res.Read
			b.StopTimer()
			if err := os.RemoveAll(root); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.SetBytes(read)
	})
}

// benchRegistryAnswers tells whether a registry answers at host.
func benchRegistryAnswers(host string) error {
	hc := &http.Client{Timeout: 3 * time.Second}
	resp, err := hc.Get("http://" + host + "/v2/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v2/: %s", resp.Status)
	}
	return nil
}

// benchPushImage generates an image of about size bytes of file content
// in 4 gzip layers, pushes it with c to a repository of its own on host,
// and deletes it from the registry once b is done. It returns
// the reference pulled.
func benchPushImage(b *testing.B, c *registry.Client, host string, size int64) string {
	b.Helper()
	ctx := context.Background()
	var layers [][]byte
	for i := range 4 {
		layers = append(layers, benchLayer(b, i, size/4))
	}
	im := imagetest.NewImage(layers, "/bin/sh")
	var compressed int
	for _, l := range layers {
		compressed += len(l)
	}
	b.Logf("image: %d MiB of file content in 4 gzip layers, %d MiB in all", size>>20, compressed>>20)
	store, err := image.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	res, err := store.ImportReader(ctx, bytes.NewReader(imagetest.OCI(im)), image.ImportOptions{})
	if err != nil {
		b.Fatal(err)
	}
	id := make([]byte, 4)
	crand.Read(id)
	repo := "berth-bench/pull-" + hex.EncodeToString(id)
	ref := host + "/" + repo + ":1"
	d, err := c.Push(ctx, store, res.Images[0].Digest.String(), ref)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		// The manifest, then the repository's links to its blobs; the
		// registry keeps the blobs' bytes until its garbage collection.
		paths := []string{"manifests/" + d.String(), "blobs/" + im.ConfigDigest().String()}
		for _, l := range layers {
			paths = append(paths, "blobs/"+digest.FromBytes(l).String())
		}
		for _, p := range paths {
			req, _ := http.NewRequest(http.MethodDelete, "http://"+host+"/v2/"+repo+"/"+p, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Logf("delete %s/%s: %v", repo, p, err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Logf("delete %s/%s: %s", repo, p, resp.Status)
			}
		}
	})
	return ref
}

// benchLayer is layer i of the generated image, gzipped: files of 4 KiB to
// 1 MiB, about total bytes in all, a quarter of them pseudo-random bytes
// (as compressed files are), the others text of words drawn from a
// vocabulary of 4096 (as source and configuration files are), which gzip
// takes to a little under half: the layers are about 58% of the content.
func benchLayer(b *testing.B, i int, total int64) []byte {
	b.Helper()
	rng := rand.New(rand.NewPCG(uint64(i), 11))
	vocab := make([][]byte, 4096)
	for k := range vocab {
		w := make([]byte, 2+rng.IntN(9))
		for j := range w {
			w[j] = 'a' + byte(rng.IntN(26))
		}
		vocab[k] = w
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		b.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	body := make([]byte, 0, 1<<20+16)
	for n := 0; total > 0; n++ {
		sz := min(total, 4<<10+rng.Int64N(1<<20-4<<10))
		total -= sz
		body = body[:0]
		if n%4 == 0 {
			body = body[:sz]
			for k := range body {
				body[k] = byte(rng.Uint32())
			}
		} else {
			for int64(len(body)) < sz {
				body = append(body, vocab[rng.IntN(len(vocab))]...)
				if rng.IntN(12) == 0 {
					body = append(body, '\n')
				} else {
					body = append(body, ' ')
				}
			}
			body = body[:sz]
		}
		hdr := &tar.Header{Name: fmt.Sprintf("layer%d/d%03d/f%05d", i, n/100, n), Typeflag: tar.TypeReg, Mode: 0o644, Size: sz, ModTime: imagetest.Epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			b.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			b.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}
