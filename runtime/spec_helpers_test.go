package runtime

import specs "github.com/opencontainers/runtime-spec/specs-go"

func userNS() specs.LinuxNamespace { return specs.LinuxNamespace{Type: specs.UserNamespace} }

func memory(l int64) *specs.LinuxMemory { return &specs.LinuxMemory{Limit: &l} }
