// Package loop attaches files to loop block devices with LOOP_CONFIGURE:
// one ioctl that sets the backing file, the flags (autoclear, read-only, no
// partition scan) and the block size atomically, so no other process can
// observe a half-configured device.
//
// Releasing is the other half: the kernel clears a device (LOOP_CLR_FD, or
// autoclear) only at its last close, and a filesystem mounted from it in any
// mount namespace holds it open. Free lets go of a device, freed at once
// unless something else holds it, Watch reports each change of a device's binding as the kernel
// announces it (so a caller waits without polling), and Holders names what
// still keeps one.
package loop
