// Command berthctl is a command-line client over berth's portable runtime
// API: every container operation of the library, one subcommand each.
//
// Usage:
//
//	berthctl [--root DIR] [--backend NAME] [GLOBAL FLAGS] COMMAND [ARG...]
//
// Global flags come before the command's name or among the command's own
// flags (berthctl --fsck run ... and berthctl run --fsck ... are the same):
//
//	--root DIR       state directory (default /var/lib/berth); the image
//	                 store is DIR/images
//	--backend NAME   engine: libcontainer (default), docker or parallels
//	--docker-host ADDRESS
//	                 the Docker daemon of --backend docker (default
//	                 $DOCKER_HOST, else unix:///var/run/docker.sock)
//	--disk-fs TYPE   root disks of --backend parallels: ext4 (default) or xfs
//	--supervisor BINARY
//	                 what supervises detached containers of --backend
//	                 libcontainer and parallels: examples/berth-supervisor
//	                 built from the same berth (default: berth-supervisor
//	                 beside berthctl if there is one, else berthctl
//	                 itself; self: berthctl). A small supervisor starts
//	                 each container sooner and costs less memory.
//	--allow-fs TYPE  also allow volumes of this filesystem (repeatable)
//	--fsck           check block and image volumes read-only before mounting
//	--allow-raw-block-without-userns
//	--volume-noexec
//	--insecure-registry HOST[:PORT]
//	                 reach this registry over plain HTTP (repeatable;
//	                 loopback registries always may)
//	--registry-mirror HOST=URL
//	                 pull HOST's images from the mirror URL first, then from
//	                 HOST (repeatable; a host's mirrors are tried in order)
//
// --image REF names an image of the store under --root (berthctl image
// import puts it there); every backend runs it: the embedded engine on an
// overlay, parallels on a disk made from it, Docker after loading an
// untagged archive berth wrote. With --backend docker, --rootfs is not
// supported, and --root is the scope: containers created with one --root
// are listed and controlled only with the same --root.
//
// Commands:
//
//	run [--rm] [--name ID] (--rootfs DIR | --image REF) [--userns] [--memory BYTES] [--cpus N] [--env K=V]... [--volume SRC:DST[:ro][:raw]]... [--disk-size BYTES] [--log-max-size BYTES] [--log-max-files N] [-i] [-t] -- CMD [ARG...]
//	create [--name ID] (--rootfs DIR | --image REF) [--userns] [--memory BYTES] [--cpus N] [--env K=V]... [--volume SRC:DST[:ro][:raw]]... [--disk-size BYTES] [--log-max-size BYTES] [--log-max-files N] [-i] [-t] -- CMD [ARG...]
//	start ID
//	exec [-i] [-t] [--env K=V]... [-w DIR] [-u UID[:GID]] ID -- CMD [ARG...]
//	kill ID [SIGNAL]
//	pause ID
//	resume ID
//	update ID [--memory BYTES] [--cpus N] [--pids N]
//	stats ID
//	ps [-q]
//	stop [-t SECONDS] ID...
//	rm [-f] ID...
//	logs [-f] [--tail N] ID
//	wait ID
//	events
//	resize-disk ID SIZE
//	snapshot [--allow-retag] ID REF
//	volume probe PATH
//	attach ID SRC:DST[:ro][:raw]
//	detach ID DST
//	image import [--expect-tag REF]... [--tag-prefix P] [--allow-retag] [--no-rootfs] FILE|DIR|-
//	image ls [-q]
//	image rm REF...
//	image export [--format docker|oci] REF FILE
//	image unpack [--allow-devices] [--allow-setid] REF DIR
//	image tag [--force] SRC DST
//	image pull [--tag REF] REF | --glance URL [--tag REF] ID
//	image push REF [DST] | --glance URL REF
//	version
//	help [COMMAND]
//
// An image subcommand's flags may come before or after its arguments
// (berthctl image pull REF --tag T); after "--" everything is an
// argument.
//
// image pull REF pulls from a registry through package image/registry
// (HTTPS, except loopback registries and --insecure-registry hosts;
// credentials from the Docker config) and tags the image REF, or --tag
// REF; it prints REF DIGEST per tag, or the digest for a pull by digest.
// image push REF [DST] uploads the image REF names to DST (default REF)
// and prints the manifest digest. With --glance URL both reach Glance
// instead, by image ID. image tag SRC DST names the image SRC names DST;
// a tag that names another image moves only with --force. On a terminal,
// pull and push show a progress bar per blob and import one for the
// archive, on stderr; nothing is shown when stderr is not a terminal.
// import and pull unpack a new image's root filesystem in the same pass
// that reads and verifies its layers, and keep it for the image's first
// unpack (or run) to take at once; --no-rootfs keeps the image only.
//
// BYTES is an integer, optionally suffixed with k, m, g, t or p (KiB, MiB,
// GiB, TiB, PiB; any case; a trailing b or ib is allowed: 64m, 64MB and
// 64MiB are the same), as volume.ParseBytes reads it. --cpus N is a fraction of one CPU, applied as a CFS quota of
// N*100000 µs per 100000 µs period. SIGNAL is a name (TERM, SIGTERM) or a
// number; kill sends KILL by default. stop sends TERM and, when the
// container has not ended SECONDS later (default 10, as docker stop), KILL;
// a paused container gets KILL at once (runtime.Container.Stop).
//
// run forwards the container's output to its own stdout and stderr (and its
// stdin with -i), proxies SIGINT, SIGTERM and SIGHUP to the container while
// it waits, and exits with the container's exit code; exec does the same
// for an extra process (its stdin with exec -i). With -t the container's
// init (exec's process) gets a terminal of its own, of berthctl's window
// size, resized as that window is (SIGWINCH); with -it, as docker run -it,
// berthctl's terminal is in raw mode meanwhile, so that what is typed,
// ^C included, reaches the container's terminal as it is, and gets its
// mode back at the end. One-letter flags go together (-it). Every container's output,
// run's too, is kept in a log capped with rotation (--log-max-size,
// default 10m, times --log-max-files, default 2); logs prints it, its last
// N lines with --tail N, and with -f follows it until the container stops.
//
// events prints the events of the containers under --root, whoever acts on
// them, one line each, until SIGINT or SIGTERM (then it exits 0):
//
//	2025-01-02T03:04:05.123456789Z started web-1
//	2025-01-02T03:04:09.5Z stopped web-1 exit=137 signal=SIGKILL oom-killed
//
// the time (RFC 3339, UTC), the event (created, started, paused, resumed,
// stopped, deleted) and the ID, then for stopped what is known of the
// exit. What other processes do is seen within a second on the embedded
// engine and parallels, at once on Docker (runtime.Runtime.Events).
//
// # Errors
//
// When berthctl itself refuses or fails (bad usage, an error from the
// library) it exits 125 and prints one line on stderr:
//
//	berthctl: <class>: <message>
//
// where class is the error's errdefs class in kebab case: invalid-argument,
// not-found, already-exists, failed-precondition, permission-denied,
// not-implemented, resource-exhausted, unavailable (an engine daemon that
// does not answer) or unknown. Scripts test the class,
// never the message. Only run and exec pass a container's own exit code
// through.
//
// With BERTH_PHASES set in its environment, run prints on stderr, once the
// container is gone, how long each phase of its work took ("phase NAME
// MS" lines: opening the state directory, then the runtime's and the
// engine's phases, as BenchmarkRunTrue reports them); scripts/tracestart
// splits the engine's start of the container's init further.
//
// The libcontainer backend re-executes this binary as a container's init
// and, without a berth-supervisor beside it, as the state root's
// supervisor, which is why main calls libcontainer.Init first.
package main
