package main

import (
	"flag"
	"strings"

	"github.com/berthrun/berth/image/registry"
)

// registryFlags are the global flags of registry access: checked as they
// are parsed, used only by the commands that reach a registry.
type registryFlags struct {
	insecure insecureList
	mirrors  mirrorList
}

func (r *registryFlags) register(fs *flag.FlagSet) {
	fs.Var(&r.insecure, "insecure-registry", "reach registry `HOST[:PORT]` over plain HTTP (repeatable; loopback registries always may)")
	fs.Var(&r.mirrors, "registry-mirror", "try the mirror URL before the registry HOST: `HOST=URL` (repeatable; a host's mirrors in order)")
}

// options are the client options the flags ask for, mirrors grouped by
// registry host in the order given.
func (r *registryFlags) options() registry.Options {
	o := registry.Options{Insecure: r.insecure}
	for _, m := range r.mirrors {
		host, u, _ := registry.ParseMirror(m) // checked by Set
		if o.Mirrors == nil {
			o.Mirrors = map[string][]string{}
		}
		// Lower case: two spellings of a host are one list, in order.
		host = strings.ToLower(host)
		o.Mirrors[host] = append(o.Mirrors[host], u)
	}
	return o
}

// insecureList is the repeatable --insecure-registry HOST[:PORT] flag.
type insecureList []string

func (l *insecureList) String() string { return strings.Join(*l, ",") }

func (l *insecureList) Set(v string) error {
	if err := registry.ParseHost(v); err != nil {
		return err
	}
	*l = append(*l, v)
	return nil
}

// mirrorList is the repeatable --registry-mirror HOST=URL flag.
type mirrorList []string

func (l *mirrorList) String() string { return strings.Join(*l, ",") }

func (l *mirrorList) Set(v string) error {
	if _, _, err := registry.ParseMirror(v); err != nil {
		return err
	}
	*l = append(*l, v)
	return nil
}

// registry returns a client built from the global flags, showing its
// transfers on p (nil: not shown). Only the commands that reach a registry
// make one.
func (a *app) registry(p *progress) (*registry.Client, error) {
	o := a.registries.options()
	o.Progress = p.onBlob()
	return registry.New(o)
}
