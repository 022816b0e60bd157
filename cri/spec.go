package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthrun/berth/image"
	"github.com/berthrun/berth/runtime"
	"github.com/berthrun/berth/volume"
)

// containerConfig turns a CRI container config into berth's: the image's
// config merged as the CRI says (a command replaces the entrypoint), the
// pod's namespaces joined, mounts through the runtime's volume policy, the
// security context and resources in the spec (the runtime's security
// policy decides what it admits).
func (s *RuntimeService) containerConfig(ctx context.Context, sb *sandbox, cfg *cri.ContainerConfig, im *image.Image, root string, policy runtime.SecurityPolicy) (*runtime.Config, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("container %q: %s: %w", cfg.GetMetadata().GetName(), fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
	}
	ic := im.Config()
	args := slices.Clone(cfg.GetCommand())
	if len(args) == 0 {
		args = slices.Clone(ic.Entrypoint)
		if len(cfg.GetArgs()) > 0 {
			args = append(args, cfg.GetArgs()...)
		} else {
			args = append(args, ic.Cmd...)
		}
	} else {
		args = append(args, cfg.GetArgs()...)
	}
	if len(args) == 0 {
		return nil, bad("no command: neither the config nor image %s names one", im.Digest)
	}
	spec := runtime.DefaultSpec("", args...)
	p := spec.Process
	p.Env = mergeEnv(ic.Env, cfg.GetEnvs())
	if cfg.GetTty() {
		// A terminal, and a TERM for it unless the image or the config
		// name one, as containerd gives.
		p.Terminal = true
		if !slices.ContainsFunc(p.Env, func(e string) bool { return strings.HasPrefix(e, "TERM=") }) {
			p.Env = append(p.Env, "TERM=xterm")
		}
	}
	p.Cwd = cfg.GetWorkingDir()
	if p.Cwd == "" {
		p.Cwd = ic.WorkingDir
	}
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	spec.Hostname = ""
	lc := cfg.GetLinux()
	sc := lc.GetSecurityContext()
	if err := setUser(p, sc, ic.User, root, bad); err != nil {
		return nil, err
	}
	if err := setSecurity(spec, sc, policy, bad); err != nil {
		return nil, err
	}
	setResources(spec, lc.GetResources())
	join, err := s.namespaces(sb, spec, sc.GetNamespaceOptions())
	if err != nil {
		return nil, err
	}
	vols, imounts, err := s.mounts(ctx, sb, spec, cfg, bad)
	if err != nil {
		return nil, err
	}
	rc := &runtime.Config{
		Spec:        spec,
		Image:       im.Digest.String(),
		KeepProcess: true,
		Join:        join,
		Volumes:     vols,
		ImageMounts: imounts,
		Labels:      map[string]string{labelKind: "container", labelSandbox: sb.ID},
		// The kubelet's stdin: kept open for attachments (Attach), closed
		// after the first one's input ends with stdin_once (which means
		// nothing without stdin, as containerd reads it).
		OpenStdin: cfg.GetStdin(),
		StdinOnce: cfg.GetStdin() && cfg.GetStdinOnce(),
	}
	if dir, lp := sb.cfg.GetLogDirectory(), cfg.GetLogPath(); dir != "" && lp != "" {
		rc.CRILog = filepath.Join(dir, lp)
		if !strings.HasPrefix(rc.CRILog, filepath.Clean(dir)+"/") {
			return nil, bad("log path %q leads out of the pod's log directory", lp)
		}
	}
	return rc, nil
}

// mergeEnv is the image's environment under the config's.
func mergeEnv(image []string, kvs []*cri.KeyValue) []string {
	env := slices.Clone(image)
	for _, kv := range kvs {
		env = slices.DeleteFunc(env, func(e string) bool { k, _, _ := strings.Cut(e, "="); return k == kv.GetKey() })
		env = append(env, kv.GetKey()+"="+string(kv.GetValue()))
	}
	return env
}

// setUser sets the process's user: the security context's, else the
// image's, names resolved in the image's /etc/passwd and /etc/group. Its
// groups, as containerd gives them: the primary group, the groups the
// user has in the image's /etc/group (unless the supplemental groups
// policy is Strict) and the supplemental groups asked for.
func setUser(p *specs.Process, sc *cri.LinuxContainerSecurityContext, imageUser, root string, bad func(string, ...any) error) error {
	userSpec := imageUser
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return bad("run_as_group needs run_as_user or run_as_username")
	}
	switch {
	case sc.GetRunAsUser() != nil:
		userSpec = strconv.FormatInt(sc.GetRunAsUser().GetValue(), 10)
	case sc.GetRunAsUsername() != "":
		userSpec = sc.GetRunAsUsername()
	}
	if userSpec == "" {
		userSpec = "0"
	}
	if g := sc.GetRunAsGroup(); g != nil {
		u, _, _ := strings.Cut(userSpec, ":")
		userSpec = u + ":" + strconv.FormatInt(g.GetValue(), 10)
	}
	u, err := execUser(root, userSpec)
	if err != nil {
		return err
	}
	p.User = specs.User{UID: uint32(u.Uid), GID: uint32(u.Gid), AdditionalGids: []uint32{uint32(u.Gid)}}
	add := func(g uint32) {
		if !slices.Contains(p.User.AdditionalGids, g) {
			p.User.AdditionalGids = append(p.User.AdditionalGids, g)
		}
	}
	switch pol := sc.GetSupplementalGroupsPolicy(); pol {
	case cri.SupplementalGroupsPolicy_Merge:
		for _, g := range u.Sgids {
			add(uint32(g))
		}
	case cri.SupplementalGroupsPolicy_Strict:
		// Nothing of the image's /etc/group.
	default:
		return bad("supplemental groups policy %d", pol)
	}
	for _, g := range sc.GetSupplementalGroups() {
		if g < 0 || g > math.MaxUint32 {
			return bad("supplemental group %d out of range", g)
		}
		add(uint32(g))
	}
	// The user's home from the image's passwd, unless the image or the
	// config sets HOME.
	if u.Home != "" && !slices.ContainsFunc(p.Env, func(e string) bool { return strings.HasPrefix(e, "HOME=") }) {
		p.Env = append(p.Env, "HOME="+u.Home)
	}
	return nil
}

// capName is a capability's name as the spec writes it.
func capName(c string) string {
	c = strings.ToUpper(c)
	if !strings.HasPrefix(c, "CAP_") {
		c = "CAP_" + c
	}
	return c
}

// setSecurity applies the security context: privileged, capabilities, no
// new privileges, masked and read-only paths, a read-only root, seccomp.
func setSecurity(spec *specs.Spec, sc *cri.LinuxContainerSecurityContext, policy runtime.SecurityPolicy, bad func(string, ...any) error) error {
	p := spec.Process
	caps := runtime.DefaultCapabilities()
	if sc.GetPrivileged() {
		caps = slices.Clone(ownCapabilities())
		spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths = nil, nil
		for i := range spec.Mounts {
			if spec.Mounts[i].Destination == "/sys" || spec.Mounts[i].Destination == "/sys/fs/cgroup" {
				spec.Mounts[i].Options = slices.DeleteFunc(spec.Mounts[i].Options, func(o string) bool { return o == "ro" })
			}
		}
	}
	if c := sc.GetCapabilities(); c != nil {
		for _, a := range c.GetAddCapabilities() {
			if strings.EqualFold(a, "ALL") {
				caps = slices.Clone(ownCapabilities())
				continue
			}
			if n := capName(a); !slices.Contains(caps, n) {
				caps = append(caps, n)
			}
		}
		for _, d := range c.GetDropCapabilities() {
			if strings.EqualFold(d, "ALL") {
				caps = nil
				continue
			}
			n := capName(d)
			caps = slices.DeleteFunc(caps, func(x string) bool { return x == n })
		}
		// An add names what stays after a drop of ALL, as the kubelet
		// means it.
		if slices.ContainsFunc(c.GetDropCapabilities(), func(d string) bool { return strings.EqualFold(d, "ALL") }) {
			for _, a := range c.GetAddCapabilities() {
				if !strings.EqualFold(a, "ALL") {
					caps = append(caps, capName(a))
				}
			}
		}
	}
	p.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: slices.Clone(caps), Permitted: slices.Clone(caps)}
	if p.User.UID != 0 {
		// A user other than root starts without capabilities, as
		// containerd and Docker do.
		p.Capabilities.Effective, p.Capabilities.Permitted = nil, nil
	}
	p.NoNewPrivileges = sc.GetNoNewPrivs()
	if !sc.GetPrivileged() {
		// The paths asked for are masked or made read-only on top of
		// the runtime's own, which stay (an empty list, Kubernetes'
		// Unmasked proc mount, unmasks nothing but for a privileged
		// container).
		spec.Linux.MaskedPaths = union(spec.Linux.MaskedPaths, sc.GetMaskedPaths())
		spec.Linux.ReadonlyPaths = union(spec.Linux.ReadonlyPaths, sc.GetReadonlyPaths())
	}
	if sc.GetReadonlyRootfs() {
		spec.Root.Readonly = true
	}
	return setSeccomp(spec, sc, policy, bad)
}

// union is a with the elements of b it lacks.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// setSeccomp applies the container's seccomp profile: the runtime's
// default, none, or a profile file on the host. Kubernetes takes no
// profile for Unconfined; berth keeps its default profile for both unless
// the runtime admits privileged containers (its policy switch), where
// they mean what Kubernetes means. A privileged container runs
// unconfined, as Kubernetes asks, whatever its profile. Unconfined is the
// profile {"defaultAction": "SCMP_ACT_ALLOW"}: with no filter at all
// (Seccomp: 0) where the runtime's policy also has AllowUnfilteredSeccomp,
// else under one that allows everything but the loop device's ioctls.
func setSeccomp(spec *specs.Spec, sc *cri.LinuxContainerSecurityContext, policy runtime.SecurityPolicy, bad func(string, ...any) error) error {
	prof := sc.GetSeccomp()
	if prof == nil {
		// The CRI's deprecated field.
		switch path := sc.GetSeccompProfilePath(); {
		case path == "" || path == "unconfined":
			prof = &cri.SecurityProfile{ProfileType: cri.SecurityProfile_Unconfined}
		case path == "runtime/default" || path == "docker/default":
			prof = &cri.SecurityProfile{ProfileType: cri.SecurityProfile_RuntimeDefault}
		case strings.HasPrefix(path, "localhost/"):
			prof = &cri.SecurityProfile{ProfileType: cri.SecurityProfile_Localhost, LocalhostRef: strings.TrimPrefix(path, "localhost/")}
		default:
			return bad("seccomp profile %q", path)
		}
	}
	if sc.GetPrivileged() {
		spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
		return nil
	}
	switch prof.GetProfileType() {
	case cri.SecurityProfile_RuntimeDefault:
		spec.Linux.Seccomp = nil // the runtime's default
	case cri.SecurityProfile_Unconfined:
		if policy.AllowPrivileged {
			spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
		} else {
			spec.Linux.Seccomp = nil
		}
	case cri.SecurityProfile_Localhost:
		ref := prof.GetLocalhostRef()
		if !filepath.IsAbs(ref) {
			return bad("seccomp profile %q is not an absolute path", ref)
		}
		data, err := readCapped(ref, maxSeccompProfile)
		if err != nil {
			return bad("seccomp profile %q: %v", ref, err)
		}
		var sp specs.LinuxSeccomp
		if err := json.Unmarshal(data, &sp); err != nil {
			return bad("seccomp profile %q: %v", ref, err)
		}
		if sp.DefaultAction == "" {
			return bad("seccomp profile %q has no default action", ref)
		}
		spec.Linux.Seccomp = &sp
	}
	return nil
}

// maxSeccompProfile caps a Localhost profile's size.
const maxSeccompProfile = 1 << 20

// readCapped reads at most max bytes of the file at path, or fails.
func readCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return data, nil
}

// setResources sets the container's limits.
func setResources(spec *specs.Spec, r *cri.LinuxContainerResources) {
	if r == nil {
		return
	}
	res := spec.Linux.Resources
	if r.GetMemoryLimitInBytes() > 0 {
		limit := r.GetMemoryLimitInBytes()
		res.Memory = &specs.LinuxMemory{Limit: &limit}
	}
	cpu := &specs.LinuxCPU{}
	set := false
	if v := r.GetCpuShares(); v > 0 {
		u := uint64(v)
		cpu.Shares, set = &u, true
	}
	if v := r.GetCpuPeriod(); v > 0 {
		u := uint64(v)
		cpu.Period, set = &u, true
	}
	if v := r.GetCpuQuota(); v > 0 {
		cpu.Quota, set = &v, true
	}
	if v := r.GetCpusetCpus(); v != "" {
		cpu.Cpus, set = v, true
	}
	if v := r.GetCpusetMems(); v != "" {
		cpu.Mems, set = v, true
	}
	if set {
		res.CPU = cpu
	}
	if v := int(r.GetOomScoreAdj()); v > 0 {
		spec.Process.OOMScoreAdj = &v
	}
}

// namespaces sets the container's namespaces from the pod's and its own
// options: what is the pod's is joined from the pod's infra container.
func (s *RuntimeService) namespaces(sb *sandbox, spec *specs.Spec, own *cri.NamespaceOption) (map[specs.LinuxNamespaceType]string, error) {
	pod := sb.cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	join := map[specs.LinuxNamespaceType]string{}
	drop := map[specs.LinuxNamespaceType]bool{}
	if pod.GetNetwork() == cri.NamespaceMode_NODE {
		drop[specs.NetworkNamespace], drop[specs.UTSNamespace] = true, true
	} else {
		join[specs.NetworkNamespace], join[specs.UTSNamespace] = sb.ID, sb.ID
	}
	if pod.GetIpc() == cri.NamespaceMode_NODE {
		drop[specs.IPCNamespace] = true
	} else {
		join[specs.IPCNamespace] = sb.ID
	}
	pid := own.GetPid()
	if own == nil {
		pid = pod.GetPid()
	}
	switch pid {
	case cri.NamespaceMode_NODE:
		drop[specs.PIDNamespace] = true
	case cri.NamespaceMode_POD:
		join[specs.PIDNamespace] = sb.ID
	case cri.NamespaceMode_TARGET:
		target := own.GetTargetId()
		c, err := s.state.container(target)
		if err != nil || c.SandboxID != sb.ID {
			return nil, fmt.Errorf("pid namespace target %q: not a container of pod %s: %w", target, sb.ID, errdefs.ErrNotFound)
		}
		join[specs.PIDNamespace] = c.ID
	}
	if userns, _ := podUserNamespace(pod); userns {
		// The runtime adds the namespace with the infra's mappings.
		join[specs.UserNamespace] = sb.ID
	}
	var kept []specs.LinuxNamespace
	for _, n := range spec.Linux.Namespaces {
		if !drop[n.Type] {
			kept = append(kept, n)
		}
	}
	spec.Linux.Namespaces = kept
	return join, nil
}

// propagation is each CRI propagation as a mount option.
var propagation = map[cri.MountPropagation]string{
	cri.MountPropagation_PROPAGATION_PRIVATE:           "rprivate",
	cri.MountPropagation_PROPAGATION_HOST_TO_CONTAINER: "rslave",
	cri.MountPropagation_PROPAGATION_BIDIRECTIONAL:     "rshared",
}

// mounts adds the pod's hostname, hosts and resolv.conf files, the
// config's block devices as raw-block volumes, and the config's mounts:
// host paths as binds, which the runtime puts through its volume manager
// and policy, images as the runtime's image mounts.
func (s *RuntimeService) mounts(ctx context.Context, sb *sandbox, spec *specs.Spec, cfg *cri.ContainerConfig, bad func(string, ...any) error) ([]volume.Spec, []runtime.ImageMount, error) {
	var vols []volume.Spec
	var imounts []runtime.ImageMount
	taken := map[string]bool{}
	for _, m := range cfg.GetMounts() {
		dst := m.GetContainerPath()
		if !filepath.IsAbs(dst) {
			return nil, nil, bad("mount destination %q is not absolute", dst)
		}
		if m.GetImage().GetImage() != "" {
			im, err := s.imageMount(ctx, m, bad)
			if err != nil {
				return nil, nil, err
			}
			imounts = append(imounts, im)
			taken[filepath.Clean(dst)] = true
			continue
		}
		if m.GetRecursiveReadOnly() && (!m.GetReadonly() || m.GetPropagation() != cri.MountPropagation_PROPAGATION_PRIVATE) {
			// As the kubelet and containerd check it: read-only
			// submounts that the host's later mounts would not be.
			return nil, nil, bad("recursive read-only mount at %s: it must be read-only, with private propagation", dst)
		}
		src := m.GetHostPath()
		if !filepath.IsAbs(src) {
			return nil, nil, bad("mount source %q is not absolute", src)
		}
		// A host path that is a link is the kubelet's or the operator's:
		// the volume is where it leads, as the kubelet expects.
		if real, err := filepath.EvalSymlinks(src); err == nil {
			src = real
		} else {
			return nil, nil, fmt.Errorf("container %q: mount source %s: %v: %w", cfg.GetMetadata().GetName(), src, err, errdefs.ErrNotFound)
		}
		opts := []string{"rbind", propagation[m.GetPropagation()]}
		switch {
		case m.GetRecursiveReadOnly():
			opts = append(opts, "rro")
		case m.GetReadonly():
			// Read-only at the bind alone: the mounts under the host
			// path keep their access, as the kubelet means it.
			opts = append(opts, "ro")
		}
		// A bind of the spec: the runtime attaches it through its volume
		// manager (opened once without following links, never a kernel
		// interface filesystem, nosuid and nodev; rslave and rshared
		// from a host path on a shared mount, rshared only under the
		// runtime's AllowPrivileged).
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: filepath.Clean(dst), Type: "bind", Source: src, Options: opts})
		taken[filepath.Clean(dst)] = true
	}
	for _, f := range []string{"hostname", "hosts", "resolv.conf"} {
		dst := "/etc/" + f
		if taken[dst] {
			continue
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: dst, Type: "bind", Source: filepath.Join(s.podDir(sb.ID), f),
			Options: []string{"rbind", "rprivate", "nosuid", "nodev", "noexec"},
		})
	}
	for _, d := range cfg.GetDevices() {
		src, dst := d.GetHostPath(), d.GetContainerPath()
		if !filepath.IsAbs(src) || !filepath.IsAbs(dst) {
			return nil, nil, bad("device %q at %q: paths must be absolute", src, dst)
		}
		fi, err := os.Stat(src)
		if err != nil {
			return nil, nil, fmt.Errorf("container %q: device %s: %v: %w", cfg.GetMetadata().GetName(), src, err, errdefs.ErrNotFound)
		}
		if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
			// Character devices reach a container only privileged.
			return nil, nil, fmt.Errorf("container %q: device %s: only block devices are exposed, as raw-block volumes: %w", cfg.GetMetadata().GetName(), src, errdefs.ErrPermissionDenied)
		}
		// A block device is a raw-block volume: the volume policy admits
		// it in a user-namespaced pod only, unless it says otherwise.
		vols = append(vols, volume.Spec{Source: src, Destination: filepath.Clean(dst), Mode: volume.ModeRawBlock,
			ReadOnly: !strings.Contains(d.GetPermissions(), "w")})
	}
	return vols, imounts, nil
}

// imageMount is a CRI image volume as the runtime's image mount: the image
// of the store (by its digest, as the container's own), or a path of it,
// read-only; m (the server's copy of the config) records the image's ID
// for the container's status. The kubelet asks read-only; a mount that is not is refused,
// as critest expects, rather than silently made so.
func (s *RuntimeService) imageMount(ctx context.Context, m *cri.Mount, bad func(string, ...any) error) (runtime.ImageMount, error) {
	dst := filepath.Clean(m.GetContainerPath())
	switch {
	case m.GetHostPath() != "":
		return runtime.ImageMount{}, bad("image volume at %s: it has a host path too", dst)
	case !m.GetReadonly():
		return runtime.ImageMount{}, bad("image volume at %s: image volumes are read-only", dst)
	case m.GetPropagation() != cri.MountPropagation_PROPAGATION_PRIVATE:
		return runtime.ImageMount{}, bad("image volume at %s: image volumes propagate nothing", dst)
	}
	ref := m.GetImage().GetImage()
	im, err := s.images.Get(ctx, ref)
	if err != nil {
		return runtime.ImageMount{}, fmt.Errorf("image volume at %s: image %s: %w", dst, ref, err)
	}
	// The container's status names the image mounted (KEP-5365): its ID,
	// as PullImage gives it.
	m.Image.ImageRef = im.ConfigDigest.String()
	return runtime.ImageMount{Image: im.Digest.String(), Destination: dst, SubPath: m.GetImageSubPath()}, nil
}
