package image

import (
	"io/fs"
	"sync"
	"syscall"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthrun/berth/image/layer"
)

// maxKnownLayers bounds the analyses a store remembers (a few hundred
// bytes each).
const maxKnownLayers = 4096

// knownLayers remembers the analysis of the layers this store placed in
// blobs/ or found there intact, so that a pull of an image whose layers the
// store holds (a new tag of busybox, say) does not decompress each of them
// again to learn what it learnt when it took them. An analysis is used
// only for the very file it was made of (same device, inode, size and
// modification time: a blob rewritten in place, or replaced, is read
// again and its rot found), under the same layer limits, and within the
// pull's uncompressed budget; reads of a blob's content (Unpack, Export)
// verify its digest as before. Only the layers that analyzed clean are
// remembered: a refusal, a non-layer and a config are always read again.
type knownLayers struct {
	mu sync.Mutex
	m  map[digest.Digest]knownLayer
}

// knownLayer is one remembered analysis.
type knownLayer struct {
	file fileID
	lim  layer.Limits // MaxSize left out: it is each pull's budget
	info layer.Info
}

// fileID tells one file's content from another's without reading it.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64 // ns
}

func fileIDOf(fi fs.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino), size: fi.Size(), mtime: fi.ModTime().UnixNano()}, true
}

// remember records that the blob in the file fi describes analyzed as info
// under lim.
func (k *knownLayers) remember(fi fs.FileInfo, lim layer.Limits, info *layer.Info) {
	id, ok := fileIDOf(fi)
	if !ok || info.NotLayer != nil || info.Size != fi.Size() {
		return
	}
	lim.MaxSize = 0
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[digest.Digest]knownLayer{}
	}
	if _, ok := k.m[info.Digest]; !ok && len(k.m) >= maxKnownLayers {
		for d := range k.m { // any one goes
			delete(k.m, d)
			break
		}
	}
	k.m[info.Digest] = knownLayer{file: id, lim: lim, info: *info}
}

// lookup returns the analysis of blob d in the file fi describes, if one
// was made of that file under lim and fits lim.MaxSize.
func (k *knownLayers) lookup(d digest.Digest, fi fs.FileInfo, lim layer.Limits) (*layer.Info, bool) {
	id, ok := fileIDOf(fi)
	if !ok {
		return nil, false
	}
	k.mu.Lock()
	e, ok := k.m[d]
	k.mu.Unlock()
	max := lim.MaxSize
	lim.MaxSize = 0
	if !ok || e.file != id || e.lim != lim || (max > 0 && e.info.UncompressedSize > max) {
		return nil, false
	}
	info := e.info
	return &info, true
}

// forget drops what is known of blob d (the store removed it).
func (k *knownLayers) forget(d digest.Digest) {
	k.mu.Lock()
	delete(k.m, d)
	k.mu.Unlock()
}

// maxKnownDocBytes bounds the bytes of the documents (as stored) whose
// parse a store remembers.
const maxKnownDocBytes = 16 << 20

// knownDocs remembers, by manifest digest, the parse of the manifests and
// configs of the store that were read and verified: a blob's content never
// changes under its digest, so Get and List (the CRI's ImageStatus and
// ListImages, called all the time) need not open, hash and parse the same
// two small files for each image at each call. The index is still read at
// each call: it alone says which images there are. Reads of content for
// others (OpenContent, Export, Unpack) read the blobs again. The parses are
// shared by the Images handed out: Image's methods give copies.
type knownDocs struct {
	mu    sync.Mutex
	m     map[digest.Digest]*knownDoc
	bytes int
}

// knownDoc is an image's manifest and config, parsed.
type knownDoc struct {
	config   digest.Digest
	manifest ocispec.Manifest
	image    ocispec.Image
	size     int // bytes of both documents as stored
}

// get returns the parse of manifest d and config c, to read only.
func (k *knownDocs) get(d, c digest.Digest) (*knownDoc, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.m[d]
	if !ok || e.config != c {
		return nil, false
	}
	return e, true
}

// put records the parse of manifest d.
func (k *knownDocs) put(d digest.Digest, e *knownDoc) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[digest.Digest]*knownDoc{}
	}
	if _, ok := k.m[d]; ok || e.size > maxKnownDocBytes {
		return
	}
	for k.bytes+e.size > maxKnownDocBytes {
		for od, oe := range k.m { // any one goes
			delete(k.m, od)
			k.bytes -= oe.size
			break
		}
	}
	k.m[d] = e
	k.bytes += e.size
}

// forget drops what is known of blob d (the store removed it): the
// image it is the manifest of, or the images it is the config of.
func (k *knownDocs) forget(d digest.Digest) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for md, e := range k.m {
		if md == d || e.config == d {
			delete(k.m, md)
			k.bytes -= e.size
		}
	}
}
