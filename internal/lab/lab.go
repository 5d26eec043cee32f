// Package lab brings up Strait's lab on one machine, entirely inside network
// namespaces: for now one node namespace behind a router namespace, the
// strait agent on the node, and two pods wired through the real CNI path
// (libcni -> strait shim -> agent). Everything it starts is recorded in a
// state file so Down removes exactly that, also after a crashed Up.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DefaultPrefix starts the name of every namespace the lab creates.
const DefaultPrefix = "strait-lab-"

// Options configure the lab.
type Options struct {
	// Dir holds the lab's state, configs, logs and IPAM store.
	Dir string
	// BinDir holds strait-agent and cni/ (strait, portmap, bandwidth).
	BinDir string
	// RepoRoot is the Strait checkout (hack/k8s builds the Kubernetes
	// binaries; the pause image is built from it).
	RepoRoot string
	// Pods to create on the node.
	Pods int
	// Prefix of the lab's namespace names (DefaultPrefix when empty); Down
	// deletes every namespace whose name starts with it.
	Prefix string
	Out    io.Writer
}

// State is what Up recorded; Down reads it.
type State struct {
	Namespaces []string    `json:"namespaces"`
	Processes  []Process   `json:"processes"`
	Pods       []PodRecord `json:"pods"`
	// Cluster is set by the Kubernetes lab.
	Cluster clusterState `json:"cluster"`
	// Flows is set by `up --flows` (flows.go).
	Flows flowsState `json:"flows,omitempty"`
	// Router is set by `up --router` (router.go).
	Router *routerState `json:"router,omitempty"`
	// Complete is set when up finished; daemons of an incomplete up belong
	// to an up that crashed or was killed, and the next up clears them.
	Complete bool `json:"complete"`
}

// Process is one daemon the lab started.
type Process struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// Exe is the binary's path, checked before killing so a reused PID is
	// never signalled.
	Exe string `json:"exe"`
	// Argv, Netns and Env let `strait-lab restart` start it again.
	Argv  []string `json:"argv,omitempty"`
	Netns string   `json:"netns,omitempty"`
	Env   []string `json:"env,omitempty"`
}

// PodRecord is one pod the lab wired.
type PodRecord struct {
	Name        string   `json:"name"`
	Netns       string   `json:"netns"`
	ContainerID string   `json:"containerID"`
	Addrs       []string `json:"addrs"`
}

func (o *Options) prefix() string {
	if o.Prefix == "" {
		return DefaultPrefix
	}
	return o.Prefix
}

func (o *Options) ns(name string) string { return o.prefix() + name }

func (o *Options) statePath() string { return filepath.Join(o.Dir, "state.json") }

func (o *Options) load() (*State, error) {
	data, err := os.ReadFile(o.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse lab state %s: %w", o.statePath(), err)
	}
	return &s, nil
}

// save writes the state atomically, so a crash mid-Up leaves a readable file.
func (o *Options) save(s *State) error {
	data, _ := json.MarshalIndent(s, "", "  ")
	tmp := o.statePath() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	if err := os.Rename(tmp, o.statePath()); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}

func (o *Options) logf(format string, args ...any) {
	if o.Out != nil {
		fmt.Fprintf(o.Out, format+"\n", args...)
	}
}

func run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Down stops every process the lab recorded (by PID, after checking it is
// still the binary the lab started), kills the containers in the lab's node
// cgroups, unmounts what kubelet and containerd mounted, deletes every lab
// namespace, and removes the host paths Up created and the lab's runtime
// files (logs stay). It is idempotent and works after a crashed Up.
func Down(ctx context.Context, o Options) error {
	s, err := o.load()
	if err != nil {
		return err
	}
	var errs []error
	stop := func(match func(Process) bool) {
		var ps []Process
		for _, p := range s.Processes {
			if match(p) {
				ps = append(ps, p)
			}
		}
		stopped, err := stopProcesses(ps)
		for _, p := range stopped {
			o.logf("stopped %s (pid %d)", p.Name, p.PID)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	isKubelet := func(p Process) bool { return strings.HasPrefix(p.Name, "kubelet-") }
	// kubelets first, so nothing restarts the containers being killed.
	stop(isKubelet)
	if len(s.Cluster.Cgroups) > 0 {
		if err := killCgroupProcs(s.Cluster.Cgroups); err != nil {
			errs = append(errs, err)
		}
	}
	for _, pid := range shimsOf(s.Cluster.Sockets) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	stop(func(p Process) bool { return !isKubelet(p) })
	if err := unmountUnder(append([]string{o.Dir}, s.Cluster.HostPaths...)...); err != nil {
		errs = append(errs, err)
	}
	// Every namespace with the lab prefix: also those a crashed Up created
	// before it could record them.
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), o.prefix()) {
			continue
		}
		if _, err := run("ip", "netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
		} else {
			o.logf("deleted namespace %s", e.Name())
		}
	}
	if s.Router != nil && s.Router.Dir != "" {
		if err := os.RemoveAll(s.Router.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range s.Cluster.HostPaths {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range []string{"state.json", "agent.sock", "cache", "cni.log", "state", "agent.log", "agent.yaml", "net.d", "nodes", "cp", "kubeconfig", "aggregator.yaml", "router", "bpffs"} {
		if err := os.RemoveAll(filepath.Join(o.Dir, f)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopProcesses sends SIGTERM to every process of ps that is still the
// binary the lab started, waits up to 5 s for all of them together, then
// SIGKILLs the rest.
func stopProcesses(ps []Process) (stopped []Process, err error) {
	var live []Process
	for _, p := range ps {
		if alive(p) {
			live = append(live, p)
			_ = syscall.Kill(p.PID, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n := 0
		for _, p := range live {
			if alive(p) {
				n++
			}
		}
		if n == 0 {
			return live, nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	var errs []error
	for _, p := range live {
		if !alive(p) {
			continue
		}
		if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %s (pid %d): %w", p.Name, p.PID, err))
		}
	}
	return live, errors.Join(errs...)
}

// alive reports whether pid still runs the binary the lab started (a zombie
// or a reused PID does not count).
func alive(p Process) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
	if err != nil || filepath.Clean(strings.TrimSuffix(exe, " (deleted)")) != filepath.Clean(p.Exe) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return true
}
