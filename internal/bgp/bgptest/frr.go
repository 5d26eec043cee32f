package bgptest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FRRNeighbor is one neighbour statement of an FRR instance.
type FRRNeighbor struct {
	Address         string
	ASN             uint32
	Password        string
	BFD             bool // needs FRR.BFD
	ExtendedNextHop bool // capability extended-nexthop
	Passive         bool
}

// FRRConfig is an FRR bgpd instance: eBGP-friendly (no policy required),
// IPv4 and IPv6 unicast activated for every neighbour, fast timers.
type FRRConfig struct {
	ASN             uint32
	RouterID        string
	Neighbors       []FRRNeighbor
	GracefulRestart bool
	BFD             bool     // run bfdd
	Networks        []string // prefixes FRR originates (import-check off)
	// BFDIntervalMS, when set, is the receive and transmit interval of the
	// BFD profile "fast" (detect multiplier 3) that BFD neighbours use;
	// FRR's default is 300 ms.
	BFDIntervalMS int
}

// renderBFD is bfdd's configuration: logging, and the "fast" profile when
// BFDIntervalMS is set.
func (c FRRConfig) renderBFD(dir string) string {
	s := fmt.Sprintf("hostname b\nlog file %s/bfdd.log\n", dir)
	if c.BFDIntervalMS > 0 {
		s += fmt.Sprintf("bfd\n profile fast\n  receive-interval %d\n  transmit-interval %d\n  detect-multiplier 3\n exit\nexit\n", c.BFDIntervalMS, c.BFDIntervalMS)
	}
	return s
}

// FRR is a running FRR (zebra + bgpd [+ bfdd]) in a namespace.
type FRR struct {
	NS  string
	Dir string
}

// StartFRR starts FRR in the namespace; it is stopped when the test ends.
func StartFRR(t testing.TB, nsName string, c FRRConfig) *FRR {
	t.Helper()
	dir, err := os.MkdirTemp("", "strait-frr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"vtysh.conf": "",
		"zebra.conf": fmt.Sprintf("hostname z\nlog file %s/zebra.log\n", dir),
		"bgpd.conf":  c.render(dir),
		"bfdd.conf":  c.renderBFD(dir),
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		_ = exec.Command("chown", "frr:frr", p).Run()
	}
	f := &FRR{NS: nsName, Dir: dir}
	daemons := []string{"zebra", "bgpd"}
	if c.BFD {
		daemons = append(daemons, "bfdd")
	}
	for _, d := range daemons {
		run(t, nsName, "/usr/lib/frr/"+d, "-d", "-f", filepath.Join(dir, d+".conf"), "-i", filepath.Join(dir, d+".pid"),
			"-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir, "-P", "0")
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := f.Vtysh("show bgp summary")
			t.Logf("FRR %s at the end:\n%s", nsName, out)
		}
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "bgpd.log")); err == nil {
				t.Logf("FRR bgpd.log (tail):\n%s", tail(string(b), 3000))
			}
		}
		for i := len(daemons) - 1; i >= 0; i-- {
			killPIDFile(filepath.Join(dir, daemons[i]+".pid"))
		}
	})
	return f
}

func killPIDFile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &pid); err != nil || pid <= 1 {
		return
	}
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Kill()
		for i := 0; i < 50; i++ {
			if exec.Command("kill", "-0", fmt.Sprint(pid)).Run() != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (c FRRConfig) render(dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults traditional\nhostname bgpd\nlog file %s/bgpd.log\n", dir)
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n no bgp network import-check\n", c.ASN, c.RouterID)
	if c.GracefulRestart {
		b.WriteString(" bgp graceful-restart\n")
	}
	for _, n := range c.Neighbors {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s timers 3 9\n neighbor %s timers connect 1\n", n.Address, n.ASN, n.Address, n.Address)
		if n.Password != "" {
			fmt.Fprintf(&b, " neighbor %s password %s\n", n.Address, n.Password)
		}
		if n.BFD {
			fmt.Fprintf(&b, " neighbor %s bfd\n", n.Address)
			if c.BFDIntervalMS > 0 {
				fmt.Fprintf(&b, " neighbor %s bfd profile fast\n", n.Address)
			}
		}
		if n.ExtendedNextHop {
			fmt.Fprintf(&b, " neighbor %s capability extended-nexthop\n", n.Address)
		}
		if n.Passive {
			fmt.Fprintf(&b, " neighbor %s passive\n", n.Address)
		}
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " address-family %s unicast\n", fam)
		for _, n := range c.Neighbors {
			fmt.Fprintf(&b, "  neighbor %s activate\n", n.Address)
		}
		for _, p := range c.Networks {
			if strings.Contains(p, ":") == (fam == "ipv6") {
				fmt.Fprintf(&b, "  network %s\n", p)
			}
		}
		b.WriteString(" exit-address-family\n")
	}
	return b.String()
}

// Vtysh runs vtysh commands against this instance.
func (f *FRR) Vtysh(cmds ...string) (string, error) {
	args := []string{"--vty_socket", f.Dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("vtysh", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh %v: %w: %s", cmds, err, out)
	}
	return string(out), nil
}

// JSON runs one vtysh command ending in "json" and decodes its output.
func (f *FRR) JSON(cmd string, v any) error {
	out, err := f.Vtysh(cmd)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("vtysh %q: decode: %w: %.300s", cmd, err, out)
	}
	return nil
}

// NeighborState is FRR's view of one neighbour.
type NeighborState struct {
	State  string `json:"state"`
	PfxRcd int    `json:"pfxRcd"`
}

// Neighbor returns the session state and IPv4/IPv6 prefixes received from addr.
func (f *FRR) Neighbor(addr string) (state string, pfx4, pfx6 int, err error) {
	var sum map[string]struct {
		Peers map[string]NeighborState `json:"peers"`
	}
	if err := f.JSON("show bgp summary json", &sum); err != nil {
		return "", 0, 0, err
	}
	n4, n6 := sum["ipv4Unicast"].Peers[addr], sum["ipv6Unicast"].Peers[addr]
	state = n4.State
	if state == "" {
		state = n6.State
	}
	return state, n4.PfxRcd, n6.PfxRcd, nil
}

// FRRPath is one path of a prefix in FRR's BGP table.
type FRRPath struct {
	Valid    bool `json:"valid"`
	Bestpath *struct {
		Overall bool `json:"overall"`
	} `json:"bestpath"`
	Stale     bool   `json:"stale"`
	PeerID    string `json:"peerId"`
	Community *struct {
		String string `json:"string"`
	} `json:"community"`
	LargeCommunity *struct {
		String string `json:"string"`
	} `json:"largeCommunity"`
	Nexthops []struct {
		IP         string `json:"ip"`
		Accessible bool   `json:"accessible"`
		Scope      string `json:"scope"`
	} `json:"nexthops"`
}

// Best says whether FRR selected this path.
func (p FRRPath) Best() bool { return p.Bestpath != nil && p.Bestpath.Overall }

// Prefix returns FRR's paths for one prefix (none if unknown).
func (f *FRR) Prefix(prefix string) ([]FRRPath, error) {
	fam := "ipv4"
	if strings.Contains(prefix, ":") {
		fam = "ipv6"
	}
	var out struct {
		Paths []FRRPath `json:"paths"`
	}
	if err := f.JSON(fmt.Sprintf("show bgp %s unicast %s json", fam, prefix), &out); err != nil {
		return nil, err
	}
	return out.Paths, nil
}

// KernelRoute is `ip route show PREFIX` in FRR's namespace ("" if absent):
// what zebra installed.
func (f *FRR) KernelRoute(prefix string) (string, error) {
	fam := "-4"
	if strings.Contains(prefix, ":") {
		fam = "-6"
	}
	out, err := Run(f.NS, "ip", fam, "route", "show", prefix)
	return strings.TrimSpace(out), err
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
