package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
)

// Address plan (never the machine's own 192.0.2.0/24 or fd00::/64).
const (
	routerV4   = "10.100.1.1"
	routerV6   = "fd42:100:1::1"
	nodeV4     = "10.100.1.11"
	nodeV6     = "fd42:100:1::11"
	nodePodV4  = "10.244.1.0/24"
	nodePodV6  = "fd42:244:1::/64"
	labNetwork = "strait"
)

// Up builds the lab. On any failure, or when ctx is cancelled (Ctrl-C), it
// removes everything it made before returning.
func Up(ctx context.Context, o Options) (err error) {
	if o.Pods <= 0 {
		o.Pods = 2
	}
	if err := o.begin(ctx); err != nil {
		return err
	}
	s := &State{}
	defer func() { err = o.cleanupOnError(ctx, err) }()

	step := func(name string, f func() error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		start := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		o.logf("  %-40s %6.0f ms", name, float64(time.Since(start).Microseconds())/1000)
		return o.save(s)
	}
	o.logf("strait-lab: bringing up 1 node with %d pods in %s", o.Pods, o.Dir)
	if err := step("namespaces and links", func() error { return topology(o, s) }); err != nil {
		return err
	}
	if err := step("strait-agent on node1", func() error { return startAgent(ctx, o, s) }); err != nil {
		return err
	}
	var list *libcni.NetworkConfigList
	if err := step("CNI config installed by the agent", func() error {
		var err error
		list, err = waitConflist(ctx, filepath.Join(o.Dir, "net.d"))
		return err
	}); err != nil {
		return err
	}
	cniConf := libcni.NewCNIConfigWithCacheDir([]string{filepath.Join(o.BinDir, "cni")}, filepath.Join(o.Dir, "cache"), nil)
	for i := 1; i <= o.Pods; i++ {
		name := fmt.Sprintf("pod%d", i)
		if err := step("pod "+name+" (CNI ADD)", func() error { return addPod(ctx, o, s, cniConf, list, name) }); err != nil {
			return err
		}
	}
	o.logf("\nnode1  %s %s  pod CIDRs %s %s", nodeV4, nodeV6, nodePodV4, nodePodV6)
	for _, p := range s.Pods {
		o.logf("  %-5s %-32s netns %s", p.Name, strings.Join(p.Addrs, " "), filepath.Base(p.Netns))
	}
	o.logf("\nconnectivity (TCP):")
	if err := Check(ctx, s, o); err != nil {
		return err
	}
	s.Complete = true
	if err := o.save(s); err != nil {
		return err
	}
	o.logf("\nTry:  ip netns exec %s ping -c1 %s\nStop: strait-lab down", filepath.Base(s.Pods[0].Netns), s.Pods[len(s.Pods)-1].Addrs[0])
	return nil
}

func topology(o Options, s *State) error {
	routerNS, nodeNS := o.ns("router"), o.ns("node1")
	for _, n := range []string{routerNS, nodeNS} {
		s.Namespaces = append(s.Namespaces, n)
		if _, err := run("ip", "netns", "add", n); err != nil {
			return err
		}
		if _, err := run("ip", "-n", n, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	cmds := [][]string{
		{"ip", "-n", routerNS, "link", "add", "to-node1", "type", "veth", "peer", "name", "eth0", "netns", nodeNS},
		{"ip", "-n", routerNS, "addr", "add", routerV4 + "/24", "dev", "to-node1"},
		{"ip", "-n", routerNS, "addr", "add", routerV6 + "/64", "dev", "to-node1", "nodad"},
		{"ip", "-n", routerNS, "link", "set", "to-node1", "up"},
		{"ip", "-n", nodeNS, "addr", "add", nodeV4 + "/24", "dev", "eth0"},
		{"ip", "-n", nodeNS, "addr", "add", nodeV6 + "/64", "dev", "eth0", "nodad"},
		{"ip", "-n", nodeNS, "link", "set", "eth0", "up"},
		{"ip", "-n", nodeNS, "route", "add", "default", "via", routerV4},
		{"ip", "-n", nodeNS, "-6", "route", "add", "default", "via", routerV6},
	}
	for _, c := range cmds {
		if _, err := run(c...); err != nil {
			return err
		}
	}
	return nil
}

func startAgent(ctx context.Context, o Options, s *State) error {
	exe, err := filepath.Abs(filepath.Join(o.BinDir, "strait-agent"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(exe); err != nil {
		return fmt.Errorf("agent binary: %w (run `make build tools`)", err)
	}
	cfg := map[string]any{
		"nodeName": "node1", "podCIDRs": []string{nodePodV4, nodePodV6},
		"socketPath": filepath.Join(o.Dir, "agent.sock"), "stateDir": filepath.Join(o.Dir, "state"),
		"cni": map[string]any{"confDir": filepath.Join(o.Dir, "net.d"), "networkName": labNetwork, "logFile": filepath.Join(o.Dir, "cni.log")},
	}
	raw, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(o.Dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		return fmt.Errorf("write agent config: %w", err)
	}
	_ = os.RemoveAll(filepath.Join(o.Dir, "net.d"))
	logf, err := os.OpenFile(filepath.Join(o.Dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("agent log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", o.ns("node1"), exe, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: the agent outlives `strait-lab up` and a Ctrl-C in the terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	s.Processes = append(s.Processes, Process{Name: "strait-agent node1", PID: cmd.Process.Pid, Exe: exe})
	go func() { _ = cmd.Wait() }()
	return nil
}

func waitConflist(ctx context.Context, dir string) (*libcni.NetworkConfigList, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := libcni.LoadNetworkConf(dir, labNetwork)
		if err == nil {
			return list, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent did not install a CNI config in %s within 30 s (see agent.log): %w", dir, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func inNS(name string, f func() error) error {
	h, err := ns.GetNS(filepath.Join("/run/netns", name))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer h.Close()
	return h.Do(func(ns.NetNS) error { return f() })
}

func addPod(ctx context.Context, o Options, s *State, c *libcni.CNIConfig, list *libcni.NetworkConfigList, name string) error {
	nsName := o.ns("node1-" + name)
	s.Namespaces = append(s.Namespaces, nsName)
	if _, err := run("ip", "netns", "add", nsName); err != nil {
		return err
	}
	rt := &libcni.RuntimeConf{ContainerID: "lab-" + name, NetNS: filepath.Join("/run/netns", nsName), IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "lab"}, {"K8S_POD_NAME", name}}}
	var res *current.Result
	err := inNS(o.ns("node1"), func() error {
		r, err := c.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		res, err = current.GetResult(r)
		return err
	})
	if err != nil {
		return err
	}
	rec := PodRecord{Name: name, Netns: rt.NetNS, ContainerID: rt.ContainerID}
	for _, ip := range res.IPs {
		rec.Addrs = append(rec.Addrs, ip.Address.IP.String())
	}
	s.Pods = append(s.Pods, rec)
	return nil
}

// Check runs TCP round trips from the first pod to every other pod (each
// address) and to the node, printing one line each.
func Check(ctx context.Context, s *State, o Options) error {
	if len(s.Pods) == 0 {
		return errors.New("no pods")
	}
	type target struct{ ns, addr, label string }
	var targets []target
	for _, p := range s.Pods[1:] {
		for _, a := range p.Addrs {
			targets = append(targets, target{filepath.Base(p.Netns), a, p.Name})
		}
	}
	targets = append(targets, target{o.ns("node1"), nodeV4, "node1"}, target{o.ns("node1"), nodeV6, "node1"})
	from := filepath.Base(s.Pods[0].Netns)
	failed := 0
	for _, t := range targets {
		err := tcpRoundTrip(from, t.ns, t.addr)
		status := "ok"
		if err != nil {
			status = "FAIL: " + err.Error()
			failed++
		}
		o.logf("  %s -> %-6s %-22s %s", s.Pods[0].Name, t.label, t.addr, status)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d connectivity checks failed", failed, len(targets))
	}
	return nil
}

func tcpRoundTrip(fromNS, toNS, addr string) error {
	var ln net.Listener
	if err := inNS(toNS, func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, "0"))
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		_, _ = c.Write([]byte("echo " + line))
	}()
	return inNS(fromNS, func() error {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if got != "echo ping\n" {
			return fmt.Errorf("unexpected reply %q", got)
		}
		return nil
	})
}

// cniLabStatus prints what the single-node CNI lab has and what is unhealthy.
func cniLabStatus(ctx context.Context, o Options, s *State) error {
	bad := 0
	for _, p := range s.Processes {
		state := "running"
		if !alive(p) {
			state = "NOT RUNNING (see " + filepath.Join(o.Dir, "agent.log") + ")"
			bad++
		}
		o.logf("%-20s pid %-7d %s", p.Name, p.PID, state)
	}
	for _, n := range s.Namespaces {
		if _, err := os.Stat(filepath.Join("/run/netns", n)); err != nil {
			o.logf("namespace %s MISSING", n)
			bad++
		}
	}
	if len(s.Pods) > 0 {
		if err := Check(ctx, s, o); err != nil {
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d problems", bad)
	}
	return nil
}
