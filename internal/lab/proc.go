package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// startDaemon starts argv with only its network namespace set to nsName
// ("" for the caller's), in its own session so it outlives strait-lab, with
// stdout and stderr appended to logPath. Unlike `ip netns exec` it keeps the
// host's mount namespace: kubelet and containerd must see each other's mounts.
func startDaemon(nsName string, argv, env []string, logPath string) (int, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return 0, fmt.Errorf("log dir: %w", err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("open log %s: %w", logPath, err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	start := func() error { return cmd.Start() }
	if nsName != "" {
		// The child is forked from this locked thread and inherits its netns.
		start = func() error { return inNS(nsName, cmd.Start) }
	}
	if err := start(); err != nil {
		return 0, fmt.Errorf("start %s in %q: %w", argv[0], nsName, err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reap it if it dies while we run
	return pid, nil
}

// recordDaemon starts a daemon and records it in the state before anything
// else can fail, so Down always finds it.
func (o *Options) recordDaemon(s *State, name, nsName string, argv, env []string) error {
	exe, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return err
	}
	argv = append([]string{exe}, argv[1:]...)
	pid, err := startDaemon(nsName, argv, env, o.logPath(name))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	s.Processes = append(s.Processes, Process{Name: name, PID: pid, Exe: exe, Argv: argv, Netns: nsName, Env: env})
	return o.save(s)
}

// Restart kills a lab daemon with SIGKILL (as a crash would) and starts it
// again with the same command line: "strait-agent n2", "kubelet n1", ...
func Restart(ctx context.Context, o Options, component, node string) error {
	s, err := o.load()
	if err != nil {
		return err
	}
	name := component
	if node != "" {
		name += "-" + node
	}
	for i, p := range s.Processes {
		if p.Name != name {
			continue
		}
		if len(p.Argv) == 0 {
			return fmt.Errorf("restart %s: its command line was not recorded (lab from an older strait-lab)", name)
		}
		if alive(p) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
			for alive(p) && ctx.Err() == nil {
				sleep(10)
			}
		}
		s.Processes = append(s.Processes[:i], s.Processes[i+1:]...)
		if err := o.recordDaemon(s, name, p.Netns, p.Argv, p.Env); err != nil {
			return err
		}
		o.logf("restarted %s (pid %d -> %d)", name, p.PID, s.Processes[len(s.Processes)-1].PID)
		return nil
	}
	return fmt.Errorf("restart: no lab process %s", name)
}

// logPath is where a component's output goes: logs/<name>.log, the name
// being "component" or "component-node".
func (o *Options) logPath(name string) string {
	return filepath.Join(o.Dir, "logs", sanitize(name)+".log")
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == ' ' || c == '/' {
			b[i] = '-'
		}
	}
	return string(b)
}
