// Package loop attaches files to loop block devices with LOOP_CONFIGURE:
// one ioctl that sets the backing file, the flags (autoclear, read-only, no
// partition scan) and the block size atomically, so no other process can
// observe a half-configured device.
package loop
