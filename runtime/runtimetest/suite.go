package runtimetest

import (
	"testing"

	"github.com/containerd/errdefs"
)

var (
	isNotFound           = errdefs.IsNotFound
	isAlreadyExists      = errdefs.IsAlreadyExists
	isInvalidArgument    = errdefs.IsInvalidArgument
	isFailedPrecondition = errdefs.IsFailedPrecondition
	isNotImplemented     = errdefs.IsNotImplemented
)

// Run runs the conformance suite against the backend h adapts.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Lifecycle", testLifecycle},
		{"Output", testOutput},
		{"Logs", testLogs},
		{"CRILog", testCRILog},
		{"CRILogHostile", testCRILogHostile},
		{"CRILogPlanted", testCRILogPlanted},
		{"Errors", testErrors},
		{"KillTERM", testKillTERM},
		{"KillKILL", testKillKILL},
		{"Stop", testStop},
		{"Events", testEvents},
		{"Exec", testExec},
		{"TerminalRun", testTerminalRun},
		{"TerminalExec", testTerminalExec},
		{"TerminalClosed", testTerminalClosed},
		{"TerminalHostile", testTerminalHostile},
		{"TerminalRefused", testTerminalRefused},
		{"Attach", testAttach},
		{"AttachStdin", testAttachStdin},
		{"AttachDetach", testAttachDetach},
		{"AttachBlockedWriter", testAttachBlockedWriter},
		{"Pause", testPause},
		{"Update", testUpdate},
		{"Stats", testStats},
		{"UserNamespace", testUserNamespace},
		{"Join", testJoin},
		{"JoinRefused", testJoinRefused},
		{"JoinRawBlock", testJoinRawBlock},
		{"Restart", testRestart},
		{"ForceDelete", testForceDelete},
		{"DeleteCreated", testDeleteCreated},
		{"Concurrent", testConcurrent},
		{"NotImplemented", testNotImplemented},
		{"VolumeHostMount", testVolumeHostMount},
		{"VolumeRefused", testVolumeRefused},
		{"VolumeRawBlock", testVolumeRawBlock},
		{"VolumeHotAttach", testVolumeHotAttach},
		{"VolumeReadOnlyUnchanged", testVolumeReadOnlyUnchanged},
		{"PrivilegedRefused", testPrivilegedRefused},
		{"KernelInterfaceBinds", testKernelInterfaceBinds},
		{"Seccomp", testSeccomp},
		{"RawDeviceIoctls", testRawDeviceIoctls},
		{"DeviceHandedOver", testDeviceHandedOver},
		{"LeaderExitedAlone", testLeaderExitedAlone},
		{"LeaderExitedAloneStopped", testLeaderExitedAloneStopped},
		{"ExecLeaderExitedAlone", testExecLeaderExitedAlone},
		{"LeaderExitedAlonePaused", testLeaderExitedAlonePaused},
		{"LeaderExitedAloneFrozen", testLeaderExitedAloneFrozen},
		{"HotAttachPlanted", testHotAttachPlanted},
		{"HotDetachMovedVolume", testHotDetachMovedVolume},
		{"DetachUnderTenantViews", testDetachUnderTenantViews},
		{"DetachedDeviceStaysItsOwn", testDetachedDeviceStaysItsOwn},
		{"Snapshot", testSnapshot},
		{"RootDisk", testRootDisk},
		{"ColdMove", testColdMove},
		{"ImportHostile", testImportHostile},
		{"Image", testImage},
		{"ImageMount", testImageMount},
		{"CommitExportImport", testCommitExportImport},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}
