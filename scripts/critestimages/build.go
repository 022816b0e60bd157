package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The busybox image's users and groups, as in Docker's busybox.
const (
	passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	group = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
`
	nsswitch = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
)

// hostBins are the commands critest runs that Debian's dynamic busybox
// lacks, taken from this host's procps and util-linux.
var hostBins = map[string]string{"/bin/pgrep": "/usr/bin/pgrep", "/bin/ipcs": "/usr/bin/ipcs"}

// builder makes the layers the specs name, each once.
type builder struct {
	pkgs   string           // the extracted Debian packages
	self   []byte           // this binary: pause and nnp
	base   map[string]bool  // the paths in the busybox layer
	layers map[string]*blob // by name
}

func build(pkgs, out string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if ok, err := static(exe); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%s is linked dynamically: build it with CGO_ENABLED=0, it becomes the images' pause and nnp", exe)
	}
	b := &builder{pkgs: pkgs, base: map[string]bool{}, layers: map[string]*blob{}}
	if b.self, err = os.ReadFile(exe); err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	layout := filepath.Join(out, "layout")
	if err := os.MkdirAll(filepath.Join(layout, "blobs", "sha256"), 0o755); err != nil {
		return err
	}
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	var refs strings.Builder
	for _, img := range images {
		desc, err := b.image(layout, img)
		if err != nil {
			return fmt.Errorf("%s: %w", img.name, err)
		}
		desc.Annotations = map[string]string{ocispec.AnnotationRefName: img.name}
		index.Manifests = append(index.Manifests, desc)
		for _, ref := range img.refs {
			fmt.Fprintf(&refs, "%s %s\n", img.name, ref)
		}
	}
	if _, err := writeJSON(layout, index, false); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(layout, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "refs"), []byte(refs.String()), 0o644)
}

// image writes img's layers, configuration and manifest to the layout and
// returns the manifest's descriptor.
func (b *builder) image(layout string, img spec) (ocispec.Descriptor, error) {
	cfg := ocispec.Image{
		Created:  &epoch,
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config:   img.config,
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest}
	for _, name := range img.layers {
		l, err := b.layer(name)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("layer %s: %w", name, err)
		}
		if err := writeBlob(layout, l.digest, l.data); err != nil {
			return ocispec.Descriptor{}, err
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.diffID)
		cfg.History = append(cfg.History, ocispec.History{Created: &epoch, CreatedBy: "berth scripts/critestimages: " + name})
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: l.digest, Size: int64(len(l.data))})
	}
	var err error
	if m.Config, err = writeJSON(layout, cfg, true); err != nil {
		return ocispec.Descriptor{}, err
	}
	m.Config.MediaType = ocispec.MediaTypeImageConfig
	desc, err := writeJSON(layout, m, true)
	desc.MediaType = ocispec.MediaTypeImageManifest
	return desc, err
}

// writeJSON writes v as a blob (or as index.json) and returns its
// descriptor.
func writeJSON(layout string, v any, asBlob bool) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d := digest.FromBytes(data)
	if !asBlob {
		return ocispec.Descriptor{}, os.WriteFile(filepath.Join(layout, ocispec.ImageIndexFile), data, 0o644)
	}
	return ocispec.Descriptor{Digest: d, Size: int64(len(data))}, writeBlob(layout, d, data)
}

func writeBlob(layout string, d digest.Digest, data []byte) error {
	return os.WriteFile(filepath.Join(layout, "blobs", d.Algorithm().String(), d.Encoded()), data, 0o644)
}

// layer returns the layer called name, made on first use.
func (b *builder) layer(name string) (*blob, error) {
	if l, ok := b.layers[name]; ok {
		return l, nil
	}
	l := newLayer()
	var err error
	switch {
	case name == "busybox":
		err = b.busybox(l)
	case name == "nginx":
		err = b.nginx(l)
	case strings.HasPrefix(name, "nginx-conf:"):
		err = nginxConf(l, strings.TrimPrefix(name, "nginx-conf:"))
	case name == "httpd":
		err = httpd(l)
	case name == "nnp":
		// Setuid root: the no_new_privs specs watch it take effect.
		err = l.file("/usr/local/bin/nnp", 0o4755, b.self)
	case name == "pause":
		err = l.file("/pause", 0o755, b.self)
	case name == "predefined-group":
		err = predefinedGroup(l)
	case strings.HasPrefix(name, "empty:"):
		err = l.file(strings.TrimPrefix(name, "empty:"), 0o644, nil)
	default:
		err = fmt.Errorf("no such layer")
	}
	if err != nil {
		return nil, err
	}
	bl, err := l.close()
	if err != nil {
		return nil, err
	}
	b.layers[name] = bl
	return bl, nil
}

// busybox is the base: Debian's dynamic busybox with every applet as a
// hard link in /bin, pgrep and ipcs, the libraries they need, and the
// busybox image's users, groups and directories.
func (b *builder) busybox(l *layer) error {
	for _, d := range []struct {
		p    string
		mode int64
	}{{"/bin", 0o755}, {"/dev", 0o755}, {"/etc", 0o755}, {"/home", 0o755}, {"/proc", 0o555}, {"/root", 0o700},
		{"/sys", 0o555}, {"/tmp", 0o1777}, {"/usr/bin", 0o755}, {"/usr/sbin", 0o755}, {"/usr/local/bin", 0o755},
		{"/var/spool/mail", 0o755}, {"/var/www", 0o755}} {
		if err := l.dir(d.p, d.mode, 0, 0); err != nil {
			return err
		}
	}
	bb := filepath.Join(b.pkgs, "bin", "busybox")
	if err := l.hostFile("/bin/busybox", bb); err != nil {
		return err
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %w", bb, err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := l.link("/bin/"+applet, "/bin/busybox"); err != nil {
			return err
		}
	}
	bins := []string{bb}
	for _, p := range slices.Sorted(maps.Keys(hostBins)) {
		if err := l.hostFile(p, hostBins[p]); err != nil {
			return err
		}
		bins = append(bins, hostBins[p])
	}
	if err := l.link("/bin/pkill", "/bin/pgrep"); err != nil { // as procps installs it
		return err
	}
	if err := b.libraries(l, bins...); err != nil {
		return err
	}
	for _, f := range []struct{ p, data string }{{"/etc/passwd", passwd}, {"/etc/group", group}, {"/etc/nsswitch.conf", nsswitch}} {
		if err := l.file(f.p, 0o644, []byte(f.data)); err != nil {
			return err
		}
	}
	for p := range l.seen {
		b.base["/"+p] = true
	}
	return nil
}

// libraries adds what the binaries need that the base layer lacks.
func (b *builder) libraries(l *layer, bins ...string) error {
	objs, err := sharedObjects(bins...)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if !b.base[o] {
			if err := l.hostFile(o, o); err != nil {
				return err
			}
		}
	}
	return nil
}

// nginx is Debian's nginx, its libraries, mime.types and default page;
// logs go to the container's output, as in Docker's nginx image.
func (b *builder) nginx(l *layer) error {
	bin := filepath.Join(b.pkgs, "usr", "sbin", "nginx")
	if err := l.hostFile("/usr/sbin/nginx", bin); err != nil {
		return err
	}
	if err := b.libraries(l, bin); err != nil {
		return err
	}
	for _, f := range []string{"/etc/nginx/mime.types", "/usr/share/nginx/html/index.html"} {
		if err := l.hostFile(f, filepath.Join(b.pkgs, f)); err != nil {
			return err
		}
	}
	for _, d := range []string{"/var/lib/nginx", "/var/log/nginx", "/var/run"} {
		if err := l.dir(d, 0o755, 0, 0); err != nil {
			return err
		}
	}
	if err := l.symlink("/var/log/nginx/access.log", "/dev/stdout"); err != nil {
		return err
	}
	return l.symlink("/var/log/nginx/error.log", "/dev/stderr")
}

// nginxConf serves the default page on listen (nginx's syntax: a port, or
// an address and port). The pid file is where critest's HostPID spec
// reads it.
func nginxConf(l *layer, listen string) error {
	conf := fmt.Sprintf(`user www-data;
worker_processes 1;
pid /var/run/nginx.pid;
error_log stderr notice;
events {
	worker_connections 64;
}
http {
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	access_log /var/log/nginx/access.log;
	server {
		listen %s;
		server_name localhost;
		location / {
			root /usr/share/nginx/html;
			index index.html;
		}
	}
}
`, listen)
	return l.file("/etc/nginx/nginx.conf", 0o644, []byte(conf))
}

// httpd stands for the e2e httpd image (Apache's, whose httpd-foreground
// logs a line naming httpd at start): busybox's httpd serves Apache's
// default page on port 80 and says so on stderr.
func httpd(l *layer) error {
	if err := l.file("/usr/local/apache2/htdocs/index.html", 0o644, []byte("<html><body><h1>It works!</h1></body></html>\n")); err != nil {
		return err
	}
	script := `#!/bin/sh
# Apache's httpd-foreground, with busybox's httpd.
echo "httpd-foreground: httpd serving /usr/local/apache2/htdocs on port 80" >&2
exec httpd -f -v -p 80 -h /usr/local/apache2/htdocs
`
	return l.file("/usr/local/bin/httpd-foreground", 0o755, []byte(script))
}

// predefinedGroup is cri-tools' images/image-predefined-group: adduser -u
// 1000 -D default-user, addgroup -g 50000 group-defined-in-image, addgroup
// default-user group-defined-in-image.
func predefinedGroup(l *layer) error {
	if err := l.file("/etc/passwd", 0o644, []byte(passwd+"default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n")); err != nil {
		return err
	}
	if err := l.file("/etc/group", 0o644, []byte(group+"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")); err != nil {
		return err
	}
	return l.dir("/home/default-user", 0o755, 1000, 1000)
}
