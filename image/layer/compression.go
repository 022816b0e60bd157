package layer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Compression is how a layer blob is compressed.
type Compression string

// The compressions berth reads. Others (bzip2, xz, which old docker load
// took) are refused.
const (
	None Compression = "none"
	Gzip Compression = "gzip"
	Zstd Compression = "zstd"
)

// MaxZstdWindow bounds the memory a zstd stream may ask for: the standard
// levels use at most 8 MiB, --long=27 uses 128 MiB.
const MaxZstdWindow = 128 << 20

var (
	gzipMagic  = []byte{0x1f, 0x8b}
	zstdMagic  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	bzip2Magic = []byte("BZh")
	xzMagic    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// Detect peeks at the start of br and tells its compression.
func Detect(br *bufio.Reader) (Compression, error) {
	head, err := br.Peek(6)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return "", err
	}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return Gzip, nil
	case bytes.HasPrefix(head, zstdMagic):
		return Zstd, nil
	case bytes.HasPrefix(head, bzip2Magic) && len(head) > 3 && head[3] >= '1' && head[3] <= '9',
		bytes.HasPrefix(head, xzMagic):
		return "", fmt.Errorf("bzip2 and xz layers are not supported: %w", errdefs.ErrInvalidArgument)
	}
	return None, nil
}

// Decompress returns the uncompressed stream of r, whatever its
// compression among those Detect knows.
func Decompress(r io.Reader) (io.ReadCloser, Compression, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	c, err := Detect(br)
	if err != nil {
		return nil, "", err
	}
	rc, err := c.reader(br)
	return rc, c, err
}

func (c Compression) reader(br *bufio.Reader) (io.ReadCloser, error) {
	switch c {
	case Gzip:
		z, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		return z, nil
	case Zstd:
		z, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxZstdWindow),
			zstd.WithDecoderMaxMemory(MaxZstdWindow*2))
		if err != nil {
			return nil, fmt.Errorf("zstd: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		return zstdCloser{z}, nil
	default:
		return io.NopCloser(br), nil
	}
}

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error { z.Decoder.Close(); return nil }

// MediaType is the OCI layer media type of a tar with compression c.
func (c Compression) MediaType() string {
	switch c {
	case Gzip:
		return ocispec.MediaTypeImageLayerGzip
	case Zstd:
		return ocispec.MediaTypeImageLayerZstd
	default:
		return ocispec.MediaTypeImageLayer
	}
}

// layerMediaTypes are the layer media types an image may use: OCI's and
// Docker's. Foreign (non-distributable) and encrypted layers are not
// among them.
var layerMediaTypes = map[string]bool{
	ocispec.MediaTypeImageLayer:                         true,
	ocispec.MediaTypeImageLayerGzip:                     true,
	ocispec.MediaTypeImageLayerZstd:                     true,
	"application/vnd.docker.image.rootfs.diff.tar":      true,
	"application/vnd.docker.image.rootfs.diff.tar.gzip": true,
	"application/vnd.docker.image.rootfs.diff.tar.zstd": true,
}

// IsLayerMediaType reports whether berth takes layers of media type mt.
// The compression itself is detected from the bytes, not the media type.
func IsLayerMediaType(mt string) bool { return layerMediaTypes[mt] }
