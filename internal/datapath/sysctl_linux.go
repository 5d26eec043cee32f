package datapath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Sysctls are read and written as files under /proc/sys/net. The view of
// /proc/sys/net follows the network namespace of the calling thread, so every
// function here must run inside Datapath.inNode (ns.Do: a locked OS thread in
// the node's namespace), never on an arbitrary goroutine.

const (
	procSysNet              = "/proc/sys/net"
	sysctlIPv6AllForwarding = "ipv6/conf/all/forwarding"
	sysctlIPv4Forward       = "ipv4/ip_forward"
)

// sysctl is one desired value, a path relative to /proc/sys/net.
type sysctl struct {
	path  string
	value string
	// optional sysctls are skipped when absent (the IPv6 tree of an
	// interface does not exist when IPv6 is disabled for it).
	optional bool
}

func (s sysctl) name() string {
	return "net." + strings.ReplaceAll(s.path, "/", ".")
}

// hostIfaceSysctls are the per-interface settings of a host veth: forward
// what the pod sends, accept from it only its own addresses (strict reverse
// path filter: anti-spoofing), answer ARP for anything routable (proxy_arp,
// no delay), and never take router advertisements from a pod.
func hostIfaceSysctls(iface string) []sysctl {
	return []sysctl{
		{path: "ipv4/conf/" + iface + "/forwarding", value: "1"},
		{path: "ipv4/conf/" + iface + "/rp_filter", value: "1"},
		{path: "ipv4/conf/" + iface + "/proxy_arp", value: "1"},
		{path: "ipv4/neigh/" + iface + "/proxy_delay", value: "0"},
		{path: "ipv6/conf/" + iface + "/forwarding", value: "1", optional: true},
		{path: "ipv6/conf/" + iface + "/accept_ra", value: "0", optional: true},
	}
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(filepath.Join(procSysNet, path))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", sysctl{path: path}.name(), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// ensureSysctl writes value unless the sysctl already has it; it reports
// whether it wrote. A missing optional sysctl is skipped.
func ensureSysctl(path, value string, optional bool) (bool, error) {
	s := sysctl{path: path, value: value, optional: optional}
	cur, err := readSysctl(path)
	if err != nil {
		if optional && errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	if cur == value {
		return false, nil
	}
	f, err := os.OpenFile(filepath.Join(procSysNet, path), os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(value)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return false, fmt.Errorf("set sysctl %s=%s: %w", s.name(), value, err)
	}
	return true, nil
}

func ensureSysctls(ss []sysctl) error {
	for _, s := range ss {
		if _, err := ensureSysctl(s.path, s.value, s.optional); err != nil {
			return err
		}
	}
	return nil
}

// sysctlDrift lists the sysctls that differ from the desired values.
func sysctlDrift(ss []sysctl) ([]string, error) {
	var items []string
	for _, s := range ss {
		cur, err := readSysctl(s.path)
		switch {
		case err != nil && s.optional && errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, err
		case cur != s.value:
			items = append(items, fmt.Sprintf("sysctl %s is %s, want %s", s.name(), cur, s.value))
		}
	}
	return items, nil
}
