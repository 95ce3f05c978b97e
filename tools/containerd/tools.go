//go:build tools

// Package tools pins the containerd 2 commands the lab's nodes run (see README.md): scripts/setup.sh
// builds them straight from the required module, so no source of containerd is kept here.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
