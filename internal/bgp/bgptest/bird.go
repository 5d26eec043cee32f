package bgptest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BIRDNeighbor is one `protocol bgp` of a BIRD instance.
type BIRDNeighbor struct {
	Name            string // protocol name
	Local           string // our address on the session
	Address         string
	ASN             uint32
	ExtendedNextHop bool // `extended next hop on` in the ipv4 channel
}

// BIRDConfig is a BIRD 2 instance that imports everything and exports
// nothing, installing BGP routes into its namespace's kernel.
type BIRDConfig struct {
	ASN       uint32
	RouterID  string
	Neighbors []BIRDNeighbor
}

// BIRD is a running bird daemon.
type BIRD struct {
	NS   string
	Ctl  string
	proc string
}

// StartBIRD starts BIRD in the namespace; it is stopped when the test ends.
func StartBIRD(t testing.TB, nsName string, c BIRDConfig) *BIRD {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\nprotocol device {}\n", c.RouterID)
	b.WriteString("protocol kernel k4 { ipv4 { export where source = RTS_BGP; }; }\n")
	b.WriteString("protocol kernel k6 { ipv6 { export where source = RTS_BGP; }; }\n")
	for _, n := range c.Neighbors {
		ext := ""
		if n.ExtendedNextHop {
			ext = " extended next hop on;"
		}
		fmt.Fprintf(&b, "protocol bgp %s { local %s as %d; neighbor %s as %d;\n  hold time 9; keepalive time 3; connect retry time 1;\n"+
			"  ipv4 { import all; export none;%s };\n  ipv6 { import all; export none; }; }\n", n.Name, n.Local, c.ASN, n.Address, n.ASN, ext)
	}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bd := &BIRD{NS: nsName, Ctl: filepath.Join(dir, "bird.ctl")}
	pid := filepath.Join(dir, "bird.pid")
	run(t, nsName, "bird", "-c", conf, "-s", bd.Ctl, "-P", pid)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := bd.Birdc("show", "protocols", "all")
			t.Logf("BIRD %s at the end:\n%s", nsName, out)
		}
		killPIDFile(pid)
	})
	return bd
}

// Birdc runs a birdc command.
func (b *BIRD) Birdc(args ...string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", b.Ctl}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %v: %w: %s", args, err, out)
	}
	return string(out), nil
}

// Established says whether the protocol's BGP session is up.
func (b *BIRD) Established(protocol string) (bool, string, error) {
	out, err := b.Birdc("show", "protocols", protocol)
	if err != nil {
		return false, out, err
	}
	return strings.Contains(out, "Established"), out, nil
}

// Route is `show route PREFIX all` ("" lines when BIRD has no such route).
func (b *BIRD) Route(prefix string) (string, error) {
	out, err := b.Birdc("show", "route", prefix, "all")
	if strings.Contains(out, "Network not found") {
		return "", nil
	}
	if err != nil {
		return out, err
	}
	if !strings.Contains(out, prefix) {
		return "", nil
	}
	return out, nil
}
