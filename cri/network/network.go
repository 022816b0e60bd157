package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/errclass"
)

// The defaults of Options: the directories scripts/setup-cni.sh writes
// berth's network configuration to and Debian's containernetworking-plugins
// installs the plugins in (/opt/cni/bin is where upstream's releases go).
const (
	DefaultConfDir  = "/etc/berth/cni/net.d"
	DefaultCacheDir = "/var/lib/berth-cri/cni/cache"
)

// DefaultBinDirs are the directories searched for plugins when
// Options.BinDirs is empty.
var DefaultBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// IfName is the pod's interface on the network; lo is set up too.
const IfName = "eth0"

// loopback is the network that brings lo up in every pod, as containerd
// and the kubelet do: a network of its own, cached and torn down like the
// pod's network. It is parsed on first use, not as the program starts:
// every container's init is a new start of the program.
var loopback = sync.OnceValue(func() *libcni.NetworkConfigList {
	l, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"cni-loopback","plugins":[{"type":"loopback"}]}`))
	if err != nil {
		panic(err)
	}
	return l
})

// cleanupTimeout bounds the teardown of a failed Setup, which runs even
// when the Setup's context is done.
const cleanupTimeout = time.Minute

// Options says where the network configuration, the plugins and libcni's
// cache are. Every directory must be an absolute path; empty fields take
// the defaults above.
type Options struct {
	// ConfDir holds the network configuration: the first *.conf,
	// *.conflist or *.json file in lexical order is the pods' network,
	// read again at every Setup and Status.
	ConfDir string
	// BinDirs are searched in order for the plugins.
	BinDirs []string
	// CacheDir is libcni's cache: the configuration, arguments and result
	// of every pod set up, which Teardown and Cached read (also after a
	// restart). It also holds the pins of the pods' network namespaces
	// (netns/ID, bind mounts). It must outlive the pods: keep it on disk,
	// not in /run.
	CacheDir string
}

// Manager sets pods' networks up and tears them down through CNI
// plugins. It is safe for concurrent use; calls for one pod (one ID) run
// one at a time.
type Manager struct {
	opts Options
	exec invoke.Exec

	mu   sync.Mutex
	busy map[string]chan struct{} // the pods a call holds, closed when it returns
}

// New checks opts and returns a Manager. It reads no configuration yet:
// Status says whether the network is ready.
func New(opts Options) (*Manager, error) {
	if opts.ConfDir == "" {
		opts.ConfDir = DefaultConfDir
	}
	if len(opts.BinDirs) == 0 {
		opts.BinDirs = DefaultBinDirs
	}
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir
	}
	for _, d := range append([]string{opts.ConfDir, opts.CacheDir}, opts.BinDirs...) {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("cni: directory %q is not an absolute path: %w", d, errdefs.ErrInvalidArgument)
		}
	}
	opts.BinDirs = slices.Clone(opts.BinDirs)
	return &Manager{
		opts: opts,
		// Plugins' stderr goes into their errors, not this process's.
		exec: &invoke.DefaultExec{RawExec: &invoke.RawExec{}, PluginDecoder: version.PluginDecoder{}},
		busy: map[string]chan struct{}{},
	}, nil
}

// Status is nil when the network is ready: a configuration is in ConfDir
// and every plugin it names (and the loopback plugin) is in BinDirs.
// Otherwise its error (unavailable) says why, for the CRI's NetworkReady
// condition.
func (m *Manager) Status() error {
	list, err := m.load()
	if err != nil {
		return err
	}
	return m.findPlugins(list)
}

// load reads the pods' network: the first configuration file in ConfDir.
func (m *Manager) load() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(m.opts.ConfDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("cni: network configuration directory %s: %w: %w", m.opts.ConfDir, err, errdefs.ErrUnavailable)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("cni: no network configuration (*.conflist, *.conf, *.json) in %s: %w", m.opts.ConfDir, errdefs.ErrUnavailable)
	}
	sort.Strings(files)
	f := files[0]
	var list *libcni.NetworkConfigList
	if filepath.Ext(f) == ".conflist" {
		list, err = libcni.ConfListFromFile(f)
	} else {
		var conf *libcni.NetworkConfig
		if conf, err = libcni.ConfFromFile(f); err == nil {
			list, err = libcni.ConfListFromConf(conf)
		}
	}
	if err == nil {
		if verr := utils.ValidateNetworkName(list.Name); verr != nil {
			err = verr
		} else if list.Name == loopback().Name {
			err = fmt.Errorf("the name %q is the loopback network's", list.Name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cni: network configuration %s: %w: %w", f, err, errdefs.ErrUnavailable)
	}
	return list, nil
}

// findPlugins checks that every plugin of list and the loopback plugin are
// in BinDirs.
func (m *Manager) findPlugins(list *libcni.NetworkConfigList) error {
	for _, l := range []*libcni.NetworkConfigList{loopback(), list} {
		for _, p := range l.Plugins {
			if _, err := invoke.FindInPath(p.Network.Type, m.opts.BinDirs); err != nil {
				return fmt.Errorf("cni: network %s: plugin %q is in none of %s: %w", l.Name, p.Network.Type, strings.Join(m.opts.BinDirs, ", "), errdefs.ErrUnavailable)
			}
		}
	}
	return nil
}

// cni is libcni over BinDirs and CacheDir, running plugins with x.
func (m *Manager) cni(x invoke.Exec) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(m.opts.BinDirs, m.opts.CacheDir, x)
}

// lock holds pod id until the returned function is called.
func (m *Manager) lock(ctx context.Context, id string) (func(), error) {
	for {
		m.mu.Lock()
		held, ok := m.busy[id]
		if !ok {
			done := make(chan struct{})
			m.busy[id] = done
			m.mu.Unlock()
			return func() {
				m.mu.Lock()
				delete(m.busy, id)
				m.mu.Unlock()
				close(done)
			}, nil
		}
		m.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Setup attaches the pod's network namespace to the network: lo up, and
// IfName with the addresses the network's IPAM gives, its routes and its
// host ports. The result's IPs are the pod's addresses, the primary first.
//
// Setup pins the namespace (a bind mount under CacheDir) until Teardown:
// the plugins work on the namespace pod.NetNS named when Setup checked it,
// and Teardown finds it whatever becomes of that path.
//
// A Setup that fails tears down what it did (interfaces, address leases,
// firewall rules, the pin) before it returns. A pod already set up is
// refused with already-exists; a pod that is not valid, or a NetNS that is
// not a network namespace other than the caller's, with invalid-argument;
// a network that is not ready with unavailable (see Status).
func (m *Manager) Setup(ctx context.Context, pod Pod) (*Result, error) {
	if err := pod.validate(); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(pod.NetNS) {
		return nil, pod.errorf("network namespace %q is not an absolute path: %w", pod.NetNS, errdefs.ErrInvalidArgument)
	}
	fd, err := openNetNS(pod.NetNS)
	if err != nil {
		return nil, pod.errorf("network namespace %s: %w: %w", pod.NetNS, err, errdefs.ErrInvalidArgument)
	}
	defer unix.Close(fd)
	unlock, err := m.lock(ctx, pod.ID)
	if err != nil {
		return nil, pod.errorf("%w", err)
	}
	defer unlock()

	list, err := m.load()
	if err == nil {
		err = m.findPlugins(list)
	}
	if err != nil {
		return nil, pod.errorf("%w", err)
	}
	if atts, err := m.cni(m.exec).GetCachedAttachments(pod.ID); err != nil {
		return nil, pod.errorf("cni cache %s: %w", m.opts.CacheDir, errclass.Ensure(err))
	} else if len(atts) > 0 {
		return nil, pod.errorf("already set up (network %s): %w", atts[0].Network, errdefs.ErrAlreadyExists)
	}
	pin := m.pin(pod.ID)
	if err := pinNetNS(fd, pin); errors.Is(err, errPinned) {
		return nil, pod.errorf("already set up, or being torn down (%s holds a network namespace): %w", pin, errdefs.ErrAlreadyExists)
	} else if err != nil {
		return nil, pod.errorf("pinning its network namespace: %w", errclass.Ensure(errclass.OS(err)))
	}

	cni := m.cni(m.exec)
	lo := pod.runtimeConf(pin, "lo")
	if _, err := cni.AddNetworkList(ctx, loopback(), lo); err != nil {
		return nil, m.undo(ctx, pod, fmt.Errorf("network %s: %w", loopback().Name, classify(ctx, err)), nil)
	}
	res, err := cni.AddNetworkList(ctx, list, pod.runtimeConf(pin, IfName))
	if err != nil {
		return nil, m.undo(ctx, pod, fmt.Errorf("network %s: %w", list.Name, classify(ctx, err)), list)
	}
	r, err := resultOf(res)
	if err != nil {
		return nil, m.undo(ctx, pod, fmt.Errorf("network %s: %w", list.Name, err), list)
	}
	return r, nil
}

// pin is where Setup pins the pod's network namespace.
func (m *Manager) pin(id string) string { return filepath.Join(m.opts.CacheDir, "netns", id) }

// undo tears down a failed Setup, even when ctx is done, and returns its
// error, with the teardown's if that failed too.
func (m *Manager) undo(ctx context.Context, pod Pod, err error, list *libcni.NetworkConfigList) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	pin := m.pin(pod.ID)
	var errs []error
	if list != nil {
		errs = append(errs, m.del(ctx, list, pod.runtimeConf(pin, IfName)))
	}
	errs = append(errs, m.del(ctx, loopback(), pod.runtimeConf(pin, "lo")))
	if derr := errors.Join(errs...); derr != nil {
		// The pin stays, for a Teardown to finish the job.
		return pod.errorf("%w (and undoing it: %v)", err, derr)
	}
	if perr := unpinNetNS(pin); perr != nil {
		return pod.errorf("%w (and undoing it: %v)", err, perr)
	}
	return pod.errorf("%w", err)
}

// Teardown detaches the pod from the network: its interfaces, address
// leases, host ports and firewall rules go, then its cache entries and
// its namespace's pin. It tears down with the configuration the pod was
// set up with (from the cache); a pod the cache does not know (a Setup cut
// short by a crash, or one torn down already) is torn down with the
// current configuration, so a second Teardown succeeds.
//
// Only the pod's ID (and its names, for errors) count: the namespace is
// the one Setup pinned, and pod.NetNS is not used. When the pin holds no
// namespace any more (the host restarted), the plugins run without one:
// they release the address lease and the host ports, and the namespace's
// interfaces went with it.
//
// Every plugin's teardown runs even when another one fails (or is
// missing); the error names each failure, and the cache entry and the
// pin stay for a Teardown to try again.
func (m *Manager) Teardown(ctx context.Context, pod Pod) error {
	if err := pod.validate(); err != nil {
		return err
	}
	unlock, err := m.lock(ctx, pod.ID)
	if err != nil {
		return pod.errorf("%w", err)
	}
	defer unlock()

	pin, netns := m.pin(pod.ID), ""
	if isNetNS(pin) {
		netns = pin
	}
	atts, err := m.cni(m.exec).GetCachedAttachments(pod.ID)
	if err != nil {
		return pod.errorf("cni cache %s: %w", m.opts.CacheDir, errclass.Ensure(err))
	}
	// The pod's networks before lo, as Setup went the other way.
	sort.SliceStable(atts, func(i, j int) bool { return atts[i].IfName != "lo" && atts[j].IfName == "lo" })
	var errs []error
	seen := map[string]bool{}
	for _, a := range atts {
		seen[a.IfName] = true
		list, err := libcni.ConfListFromBytes(a.Config)
		if err != nil {
			errs = append(errs, fmt.Errorf("network %s: cached configuration: %w", a.Network, err))
			continue
		}
		rt := &libcni.RuntimeConf{ContainerID: pod.ID, NetNS: netns, IfName: a.IfName, Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs}
		if err := m.del(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", list.Name, err))
		}
	}
	if !seen[IfName] {
		// No record of the pod's network: the current one's teardown
		// releases what a Setup cut short may have left.
		if list, err := m.load(); err == nil {
			if err := m.del(ctx, list, pod.runtimeConf(netns, IfName)); err != nil {
				errs = append(errs, fmt.Errorf("network %s: %w", list.Name, err))
			}
		}
	}
	if !seen["lo"] && netns != "" {
		if err := m.del(ctx, loopback(), pod.runtimeConf(netns, "lo")); err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", loopback().Name, err))
		}
	}
	if len(errs) > 0 {
		return pod.errorf("teardown: %w", classify(ctx, errors.Join(errs...)))
	}
	if err := unpinNetNS(pin); err != nil {
		return pod.errorf("teardown: network namespace pin: %w", errclass.Ensure(errclass.OS(err)))
	}
	return nil
}

// Cached is the result of the pod's Setup, from the cache (a restarted
// server's way to its pods' addresses); not-found when the cache holds
// no network for the pod.
func (m *Manager) Cached(pod Pod) (*Result, error) {
	if err := pod.validate(); err != nil {
		return nil, err
	}
	cni := m.cni(m.exec)
	atts, err := cni.GetCachedAttachments(pod.ID)
	if err != nil {
		return nil, pod.errorf("cni cache %s: %w", m.opts.CacheDir, errclass.Ensure(err))
	}
	for _, a := range atts {
		if a.IfName != IfName {
			continue
		}
		list, err := libcni.ConfListFromBytes(a.Config)
		if err != nil {
			return nil, pod.errorf("network %s: cached configuration: %w: %w", a.Network, err, errdefs.ErrDataLoss)
		}
		res, err := cni.GetNetworkListCachedResult(list, &libcni.RuntimeConf{ContainerID: pod.ID, IfName: IfName})
		if err == nil && res == nil {
			break
		}
		if err == nil {
			var r *Result
			if r, err = resultOf(res); err == nil {
				return r, nil
			}
		}
		return nil, pod.errorf("network %s: cached result: %w: %w", a.Network, err, errdefs.ErrDataLoss)
	}
	return nil, pod.errorf("no network in the cache: %w", errdefs.ErrNotFound)
}

// del runs the teardown (DEL) of every plugin of list, last first, through
// libcni: a plugin that fails or is missing does not stop the others. Its
// error names each failure; libcni then keeps its cache entry (a DEL that
// succeeds removes it).
func (m *Manager) del(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	x := &delExec{Exec: m.exec, n: len(list.Plugins), missing: map[string]error{}}
	err := m.cni(x).DelNetworkList(ctx, list, rt)
	if err == nil {
		return nil
	}
	if x.returned && len(x.errs) > 0 {
		return errors.Join(x.errs...)
	}
	return errors.Join(append(x.errs, err)...)
}

// delExec runs a list's DEL through libcni and keeps going: a failing
// plugin's error is kept and libcni told of none until the list's last
// call (the first plugin's), which returns them all, so that libcni keeps
// the cache entry. A missing plugin counts as a failing one.
type delExec struct {
	invoke.Exec
	n, calls int
	missing  map[string]error // the paths FindInPath made up for plugins it did not find
	errs     []error
	returned bool // the last call returned errs
}

func (x *delExec) FindInPath(plugin string, paths []string) (string, error) {
	p, err := x.Exec.FindInPath(plugin, paths)
	if err != nil {
		p = "\x00" + plugin
		x.missing[p] = fmt.Errorf("plugin %q (delete): %w: %w", plugin, err, errdefs.ErrUnavailable)
	}
	return p, nil
}

func (x *delExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	x.calls++
	err, missing := x.missing[path]
	if !missing {
		if _, err = x.Exec.ExecPlugin(ctx, path, stdin, env); err != nil {
			err = fmt.Errorf("plugin %q (delete): %w", filepath.Base(path), err)
		}
	}
	if err != nil {
		x.errs = append(x.errs, err)
	}
	if x.calls < x.n {
		return nil, nil
	}
	x.returned = true
	return nil, errors.Join(x.errs...)
}

// classify gives a plugin's error its class: the context's error when it
// is done (a plugin it killed says only that it failed), the CNI's "try
// again later" codes and a missing plugin unavailable, an exhausted
// address range resource-exhausted; anything else is unknown.
func classify(ctx context.Context, err error) error {
	if err == nil || errclass.Has(err) {
		return err
	}
	var te *types.Error
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", err, ctx.Err())
	case errors.As(err, &te) && (te.Code == types.ErrTryAgainLater || te.Code == types.ErrPluginNotAvailable || te.Code == types.ErrLimitedConnectivity):
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	case strings.Contains(err.Error(), "no IP addresses available"): // host-local's
		return fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted)
	case strings.Contains(err.Error(), "failed to find plugin"):
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	return errclass.Ensure(err)
}

// Result is what Setup gave a pod.
type Result struct {
	// IPs are the addresses of the pod's interface: IPv4 first, in the
	// order the plugins gave them, then IPv6. The first is the pod's IP.
	IPs []net.IP
}

// resultOf picks the pod interface's addresses from a plugin chain's
// result.
func resultOf(res types.Result) (*Result, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("result: %w: %w", err, errdefs.ErrUnknown)
	}
	var v4, v6 []net.IP
	for _, ip := range r.IPs {
		if ip.Interface != nil {
			i := *ip.Interface
			if i < 0 || i >= len(r.Interfaces) || r.Interfaces[i].Name != IfName || r.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		if v := ip.Address.IP.To4(); v != nil {
			v4 = append(v4, v)
		} else {
			v6 = append(v6, ip.Address.IP)
		}
	}
	if len(v4)+len(v6) == 0 {
		return nil, fmt.Errorf("the plugins gave %s no address: %w", IfName, errdefs.ErrFailedPrecondition)
	}
	return &Result{IPs: append(v4, v6...)}, nil
}
