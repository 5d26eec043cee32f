package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a daemon started by a test inside a namespace. It is killed by
// PID when the test ends, and it dies with the test process (Pdeathsig).
type Process struct {
	t    testing.TB
	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	ns   string
	argv []string
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartProcess runs argv inside the named namespace ("" for the current one).
func StartProcess(t testing.TB, nsName string, argv ...string) *Process {
	t.Helper()
	p := &Process{t: t, out: &lockedBuffer{}, ns: nsName, argv: argv}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("output of %v:\n%s", argv, p.Output())
		}
	})
	return p
}

func (p *Process) start() error {
	args := p.argv
	if p.ns != "" {
		args = append([]string{"ip", "netns", "exec", p.ns}, p.argv...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.Env = os.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %v: %w", p.argv, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return nil
}

// PID of the running process.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Kill sends SIGKILL to the process (by PID) and waits for it to exit.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.t.Errorf("process %v did not exit after SIGKILL", p.argv)
	}
}

// Signal sends sig to the process if it still runs.
func (p *Process) Signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
}

// Restart kills the process and starts it again with the same arguments.
func (p *Process) Restart() error {
	p.Kill()
	return p.start()
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output is everything the process wrote so far.
func (p *Process) Output() string { return p.out.String() }
