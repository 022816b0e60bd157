package ocilayout

import (
	"archive/tar"
	"encoding/json"
	"io"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Writer writes an OCI image layout into a tar stream: oci-layout, the
// blobs under blobs/ALG/ (each directory once), index.json. Every entry is
// stamped with one modification time, so that the same content always
// gives the same bytes. The caller closes the tar writer.
type Writer struct {
	tw      *tar.Writer
	modTime time.Time
	dirs    map[string]bool
}

// NewWriter returns a Writer on tw whose entries carry modTime.
func NewWriter(tw *tar.Writer, modTime time.Time) *Writer {
	return &Writer{tw: tw, modTime: modTime, dirs: map[string]bool{}}
}

// WriteFile writes a read-only file at name: a document of the layout, or
// one another format keeps beside it (docker's manifest.json).
func (w *Writer) WriteFile(name string, b []byte) error {
	if err := w.tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o444, Size: int64(len(b)), ModTime: w.modTime, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := w.tw.Write(b)
	return err
}

// WriteLayout writes the oci-layout file.
func (w *Writer) WriteLayout() error {
	b, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return err
	}
	return w.WriteFile(LayoutFile, b)
}

// WriteBlob writes the blob d of size bytes, read from r, at BlobPath(d),
// with its directories first.
func (w *Writer) WriteBlob(d digest.Digest, size int64, r io.Reader) error {
	for _, dir := range []string{"blobs/", "blobs/" + d.Algorithm().String() + "/"} {
		if !w.dirs[dir] {
			w.dirs[dir] = true
			if err := w.tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: w.modTime, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
	}
	if err := w.tw.WriteHeader(&tar.Header{Name: BlobPath(d), Typeflag: tar.TypeReg, Mode: 0o444, Size: size, ModTime: w.modTime, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := io.Copy(w.tw, r)
	return err
}

// WriteIndex writes index.json listing the manifest m once per tag, named
// as containerd and docker do (the io.containerd.image.name annotation
// with the whole reference, org.opencontainers.image.ref.name with the
// tag alone); with no tag, m is listed once, unnamed.
func (w *Writer) WriteIndex(m ocispec.Descriptor, tags []string) error {
	b, err := MarshalIndex(m, tags)
	if err != nil {
		return err
	}
	return w.WriteFile(IndexFile, b)
}

// MarshalIndex gives the index.json WriteIndex writes.
func MarshalIndex(m ocispec.Descriptor, tags []string) ([]byte, error) {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	if len(tags) == 0 {
		idx.Manifests = append(idx.Manifests, m)
	}
	for _, t := range tags {
		d := m
		d.Annotations = map[string]string{"io.containerd.image.name": t, ocispec.AnnotationRefName: t[strings.LastIndexByte(t, ':')+1:]}
		idx.Manifests = append(idx.Manifests, d)
	}
	return json.Marshal(idx)
}
