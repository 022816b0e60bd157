package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/image/glance"
	"github.com/berthrun/berth/image/registry"
)

// imageCommands lists the subcommands in the order help shows them; it
// is filled in init, its entries refer to parseImage, which reads it.
var imageCommands []command

func init() {
	imageCommands = []command{
		{"import", "[--expect-tag REF]... [--tag-prefix P] [--allow-retag] [--no-rootfs] FILE|DIR|-",
			"import a docker-save archive or OCI layout (- reads it from stdin); print REF DIGEST per tag, or the digest", (*app).cmdImageImport},
		{"ls", "[-q]", "list images", (*app).cmdImageLs},
		{"rm", "REF...", "remove tags or images (a tag's image goes with its last tag)", (*app).cmdImageRm},
		{"export", "[--format docker|oci] REF FILE", "write an image as a docker-save or OCI archive (FILE - is stdout)", (*app).cmdImageExport},
		{"unpack", "[--allow-devices] [--allow-setid] REF DIR", "unpack an image's root filesystem into a new directory", (*app).cmdImageUnpack},
		{"tag", "[--force] SRC DST", "make the tag DST name the image SRC names (a tag or a digest); print DST DIGEST", (*app).cmdImageTag},
		{"pull", "[--tag REF] REF | --glance URL [--tag REF] ID",
			"pull an image from a registry (or, with --glance, by ID from Glance); print REF DIGEST per tag, or the digest", (*app).cmdImagePull},
		{"push", "REF [DST] | --glance URL REF",
			"upload an image to a registry, as DST if given, and print its manifest digest (or, with --glance, to Glance: print the Glance image ID)", (*app).cmdImagePush},
	}
}

// imageUsage is the image command's args line in the command table.
const imageUsage = "import|ls|rm|export|unpack|tag|pull|push ..."

func (a *app) cmdImage(_ *flag.FlagSet, args []string) (int, error) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) == 0 {
			return 0, usageErrorf("image: no subcommand given (%s)", imageNames())
		}
		fmt.Fprintf(a.stdout, "usage: berthctl image SUBCOMMAND [ARG...]\n\nsubcommands:\n")
		for _, c := range imageCommands {
			fmt.Fprintf(a.stdout, "  %s %s\n      %s\n", c.name, c.args, c.summary)
		}
		return 0, nil
	}
	for _, c := range imageCommands {
		if c.name == args[0] {
			return c.run(a, a.flagSet("image "+c.name), args[1:])
		}
	}
	return 0, usageErrorf("image: unknown subcommand %q (%s)", args[0], imageNames())
}

func imageNames() string {
	var n []string
	for _, c := range imageCommands {
		n = append(n, c.name)
	}
	return strings.Join(n, ", ")
}

// parseImage parses an image subcommand's flags, before or after its
// positional arguments (see interleaved), and checks it got between min
// and max positional arguments (max < 0: no bound).
func (a *app) parseImage(fs *flag.FlagSet, args []string, min, max int) error {
	name := strings.TrimPrefix(fs.Name(), "image ")
	var cmd command
	for _, c := range imageCommands {
		if c.name == name {
			cmd = c
		}
	}
	err := fs.Parse(interleaved(fs, args))
	if errors.Is(err, flag.ErrHelp) {
		return a.showHelp("image ", cmd, fs)
	}
	if err != nil {
		return flagError(fs, err)
	}
	if fs.NArg() < min || (max >= 0 && fs.NArg() > max) {
		return usageErrorf("%s: got %d argument(s) (usage: berthctl image %s %s)", fs.Name(), fs.NArg(), cmd.name, cmd.args)
	}
	return nil
}

// imageStore opens the image store under the state root.
func (a *app) imageStore() (*image.Store, error) {
	return image.Open(filepath.Join(a.root, "images"))
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func (a *app) cmdImageImport(fs *flag.FlagSet, args []string) (int, error) {
	var pol image.TagPolicy
	fs.Var((*stringList)(&pol.Expect), "expect-tag", "create this archive tag (`REF`, repeatable); the archive must hold it")
	fs.StringVar(&pol.Prefix, "tag-prefix", "", "create every archive tag under repository path `P`")
	fs.BoolVar(&pol.AllowRetag, "allow-retag", false, "let the import move tags that name other images")
	noRootfs := fs.Bool("no-rootfs", false, "keep the images only: do not unpack their root filesystems as they stream in, for the first unpack or run to take")
	if err := a.parseImage(fs, args, 1, 1); err != nil {
		return 0, err
	}
	s, err := a.imageStore()
	if err != nil {
		return 0, err
	}
	src := fs.Arg(0)
	opts := image.ImportOptions{Tags: pol, NoRootfs: *noRootfs}
	name := filepath.Base(src)
	if src == "-" {
		name = "standard input"
	}
	p := a.progress()
	opts.Progress = p.onRead("importing " + name)
	defer p.stop(false)
	var res *image.ImportResult
	if src == "-" {
		if _, terr := unix.IoctlGetTermios(int(a.stdin.Fd()), unix.TCGETS); terr == nil {
			return 0, usageErrorf("image import: - reads the archive from standard input, which is a terminal")
		}
		// The archive streams from stdin: the store reads it once,
		// with the same limits as a file.
		res, err = s.ImportReader(context.Background(), a.stdin, opts)
	} else {
		res, err = s.Import(context.Background(), src, opts)
	}
	if err != nil {
		return 0, err
	}
	p.stop(true)
	a.printImported(res)
	return 0, nil
}

// printImported prints REF DIGEST for every tag the import holds now, or
// the digest of each image when it made no tag.
func (a *app) printImported(res *image.ImportResult) {
	n := 0
	for _, t := range res.Tags {
		if t.Action != image.TagSkipped {
			fmt.Fprintf(a.stdout, "%s %s\n", t.Ref, t.Digest)
			n++
		}
	}
	if n == 0 {
		for _, im := range res.Images {
			fmt.Fprintln(a.stdout, im.Digest)
		}
	}
}

func (a *app) cmdImageLs(fs *flag.FlagSet, args []string) (int, error) {
	quiet := fs.Bool("q", false, "print only digests")
	if err := a.parseImage(fs, args, 0, 0); err != nil {
		return 0, err
	}
	s, err := a.imageStore()
	if err != nil {
		return 0, err
	}
	list, err := s.List(context.Background())
	if err != nil {
		return 0, err
	}
	if *quiet {
		for _, im := range list {
			fmt.Fprintln(a.stdout, im.Digest)
		}
		return 0, nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "REFERENCE\tDIGEST\tSIZE\tIMPORTED")
	for _, im := range list {
		refs := im.Tags
		if len(refs) == 0 {
			refs = []string{"<none>"}
		}
		for _, r := range refs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r, im.Digest, im.Size, im.Imported.UTC().Format(time.RFC3339))
		}
	}
	return 0, tw.Flush()
}

func (a *app) cmdImageRm(fs *flag.FlagSet, args []string) (int, error) {
	if err := a.parseImage(fs, args, 1, -1); err != nil {
		return 0, err
	}
	s, err := a.imageStore()
	if err != nil {
		return 0, err
	}
	var f failures
	for _, ref := range fs.Args() {
		res, err := s.Remove(context.Background(), ref)
		f.add(err)
		if err != nil {
			continue
		}
		for _, t := range res.Untagged {
			fmt.Fprintf(a.stdout, "untagged %s\n", t)
		}
		if res.Deleted != "" {
			fmt.Fprintf(a.stdout, "deleted %s\n", res.Deleted)
		}
	}
	return 0, f.err()
}

func (a *app) cmdImageExport(fs *flag.FlagSet, args []string) (int, error) {
	format := fs.String("format", image.FormatDocker, "archive `FORMAT`: docker or oci")
	if err := a.parseImage(fs, args, 2, 2); err != nil {
		return 0, err
	}
	s, err := a.imageStore()
	if err != nil {
		return 0, err
	}
	ref, dst := fs.Arg(0), fs.Arg(1)
	ctx := context.Background()
	if dst == "-" {
		return 0, s.Export(ctx, ref, a.stdout, image.ExportOptions{Format: *format})
	}
	// Written beside the destination and renamed: a failed export leaves
	// no partial archive behind.
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp*")
	if err != nil {
		return 0, fmt.Errorf("export to %q: %w", dst, err)
	}
	defer os.Remove(tmp.Name())
	if err := s.Export(ctx, ref, tmp, image.ExportOptions{Format: *format}); err != nil {
		tmp.Close()
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("export to %q: %w", dst, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return 0, fmt.Errorf("export to %q: %w", dst, err)
	}
	return 0, os.Rename(tmp.Name(), dst)
}

func (a *app) cmdImageUnpack(fs *flag.FlagSet, args []string) (int, error) {
	var opts image.UnpackOptions
	fs.BoolVar(&opts.AllowDevices, "allow-devices", false, "create the image's device nodes (dropped by default)")
	fs.BoolVar(&opts.AllowSetid, "allow-setid", false, "keep setuid/setgid bits and file capabilities (cleared by default)")
	if err := a.parseImage(fs, args, 2, 2); err != nil {
		return 0, err
	}
	s, err := a.imageStore()
	if err != nil {
		return 0, err
	}
	_, err = s.Unpack(context.Background(), fs.Arg(0), fs.Arg(1), opts)
	return 0, err
}

func (a *app) cmdImageTag(fs *flag.FlagSet, args []string) (int, error) {
	force := fs.Bool("force", false, "move DST if it names another image")
	if err := a.parseImage(fs, args, 2, 2); err != nil {
		return 0, err
	}
	if _, err := image.NormalizeTag(fs.Arg(1)); err != nil {
		return 0, err
	}
	s, err := a.imageStore()
	if err != nil {
		return 0, err
	}
	ch, err := s.Tag(context.Background(), fs.Arg(0), fs.Arg(1), *force)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(a.stdout, "%s %s\n", ch.Ref, ch.Digest)
	return 0, nil
}

func (a *app) cmdImagePull(fs *flag.FlagSet, args []string) (int, error) {
	url := fs.String("glance", "", "pull from the Glance endpoint `URL`, by image ID, instead of a registry")
	tag := fs.String("tag", "", "name the pulled image `REF` (not the reference's own tag; a Glance archive's tags are not taken)")
	if err := a.parseImage(fs, args, 1, 1); err != nil {
		return 0, err
	}
	if *url != "" {
		return a.pullGlance(*url, fs.Arg(0), *tag)
	}
	ref := fs.Arg(0)
	// Bad usage changes nothing: the references are checked before the
	// store opens.
	if _, err := registry.ParseReference(ref); err != nil {
		return 0, err
	}
	if *tag != "" {
		if _, err := image.NormalizeTag(*tag); err != nil {
			return 0, err
		}
	}
	s, err := a.imageStore()
	if err != nil {
		return 0, err
	}
	p := a.progress()
	defer p.stop(false)
	c, err := a.registry(p)
	if err != nil {
		return 0, err
	}
	res, err := c.Pull(context.Background(), s, ref, image.ImportOptions{Tags: image.TagPolicy{Name: *tag}})
	if err != nil {
		return 0, err
	}
	p.stop(true)
	a.printImported(res)
	return 0, nil
}

// pullGlance imports the Glance image id.
func (a *app) pullGlance(url, id, tag string) (int, error) {
	s, err := a.imageStore()
	if err != nil {
		return 0, err
	}
	opts := glance.PullOptions{Import: image.ImportOptions{Tags: image.TagPolicy{Name: tag}}}
	p := a.progress()
	opts.Import.Progress = p.onRead("pulling " + id)
	defer p.stop(false)
	res, err := glance.Pull(context.Background(), url, id, s, opts)
	if err != nil {
		return 0, err
	}
	p.stop(true)
	a.printImported(res)
	return 0, nil
}

func (a *app) cmdImagePush(fs *flag.FlagSet, args []string) (int, error) {
	url := fs.String("glance", "", "upload to the Glance endpoint `URL` instead of a registry")
	if err := a.parseImage(fs, args, 1, 2); err != nil {
		return 0, err
	}
	src, dst := fs.Arg(0), fs.Arg(1)
	if *url != "" {
		if dst != "" {
			return 0, usageErrorf("image push: --glance takes one REF, no DST")
		}
		return a.pushGlance(*url, src)
	}
	if _, err := registry.ParseReference(cmp.Or(dst, src)); err != nil {
		return 0, err
	}
	s, err := a.imageStore()
	if err != nil {
		return 0, err
	}
	p := a.progress()
	defer p.stop(false)
	c, err := a.registry(p)
	if err != nil {
		return 0, err
	}
	d, err := c.Push(context.Background(), s, src, dst)
	if err != nil {
		return 0, err
	}
	p.stop(true)
	fmt.Fprintln(a.stdout, d)
	return 0, nil
}

// pushGlance uploads the image ref to Glance and prints its Glance ID.
func (a *app) pushGlance(url, ref string) (int, error) {
	s, err := a.imageStore()
	if err != nil {
		return 0, err
	}
	id, err := glance.Push(context.Background(), url, s, ref, glance.PushOptions{})
	if err != nil {
		return 0, err
	}
	fmt.Fprintln(a.stdout, id)
	return 0, nil
}
