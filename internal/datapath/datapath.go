package datapath

import (
	"errors"
	"log/slog"
)

// ErrNetnsNotFound reports that a pod's network namespace path does not
// exist (the CNI layer maps it to CNI error 3, "unknown container").
var ErrNetnsNotFound = errors.New("datapath: network namespace not found")

// Options configures New.
type Options struct {
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// NodeNetns is the path of the network namespace to program, the node's.
	// Empty means the namespace of the calling thread at New, which is the
	// node's namespace for the agent. Tests point it at a throwaway
	// namespace, so that neither the test process nor the root namespace is
	// touched: every netlink call and /proc/sys write targets this namespace.
	NodeNetns string
}
