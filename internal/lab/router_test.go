package lab

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strait-net/strait/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite testdata/router/*.golden")

// The router's configs and API objects, byte for byte (-update rewrites them).
func TestRouterConfigGolden(t *testing.T) {
	n1, n2 := (&Options{}).nodes(2)[0], (&Options{}).nodes(2)[1]
	cases := map[string]string{
		"frr-zebra.conf":   frrZebraConfig(),
		"frr-bgpd.conf":    frrBGPConfig(),
		"bird.conf":        birdConfig(),
		"objects.yaml":     routerObjects(),
		"agent-bgp.yaml":   agentBGPConfig(RouterFRR),
		"kubelet-args.txt": strings.Join(append(kubeletRouterArgs(RouterFRR, n1), kubeletRouterArgs(RouterBIRD, n2)...), "\n") + "\n",
	}
	for name, got := range cases {
		p := filepath.Join("testdata", "router", name+".golden")
		if *update {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%v (run with -update)", err)
		}
		if got != string(want) {
			t.Errorf("%s differs from %s:\n%s", name, p, got)
		}
	}
}

// Without --router nothing of a node's config or kubelet flags changes.
func TestNoRouterChangesNothing(t *testing.T) {
	n := (&Options{}).nodes(1)[0]
	if agentBGPConfig("") != "" || kubeletRouterArgs("", n) != nil {
		t.Fatal("the default lab gets BGP settings")
	}
	if err := checkRouter(""); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"gobgp", "FRR ", "x"} {
		if err := checkRouter(bad); err == nil || !strings.Contains(err.Error(), "frr or bird") {
			t.Errorf("checkRouter(%q) = %v", bad, err)
		}
	}
}

// The rendered configs are accepted by the real daemons' config checkers.
func TestRouterConfigsParse(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	bird := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(bird, []byte(birdConfig()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bird", "-p", "-c", bird).CombinedOutput(); err != nil {
		t.Errorf("bird -p: %v\n%s", err, out)
	}
	// bgpd reads its config as user frr: a folder it can enter (t.TempDir's parent is 0700).
	dir, err := os.MkdirTemp("", "strait-lab-frr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bgpd := filepath.Join(dir, "bgpd.conf")
	if err := os.WriteFile(bgpd, []byte(frrBGPConfig()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/lib/frr/bgpd", "-C", "-f", bgpd, "-i", filepath.Join(dir, "bgpd.pid"), "-P", "0",
		"-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir).CombinedOutput()
	if err != nil || strings.Contains(string(out), "[EC ") || strings.Contains(string(out), "No such command") {
		// bgpd -C exits 0 on an unknown line; it only logs it.
		t.Errorf("bgpd -C: %v\n%s", err, out)
	}
}

func TestParseRouterSessions(t *testing.T) {
	frr := []byte(`{"ipv4Unicast":{"peers":{"10.100.1.11":{"state":"Established"},"10.100.2.12":{"state":"Active"}}},
"ipv6Unicast":{"peers":{"10.100.1.11":{"state":"Established"},"10.100.2.12":{"state":"Active"}}}}`)
	got, err := parseFRRSessions(frr)
	if err != nil || got["10.100.1.11"] != "Established" || got["10.100.2.12"] != "Active" || len(got) != 2 {
		t.Fatalf("FRR: %v %v", got, err)
	}
	if _, err := parseFRRSessions([]byte("% Unknown command")); err == nil {
		t.Fatal("garbage parsed")
	}
	bird := `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
subnet_a   BGP        ---        start  04:10:00.000  Passive
  BGP state:          Passive
    Neighbor range:   10.100.1.0/24
    Neighbor AS:      64513
a_1        BGP        ---        up     04:10:01.000  Established
  BGP state:          Established
    Neighbor address: 10.100.1.11
    Neighbor AS:      64513
b_1        BGP        ---        start  04:10:01.000  Connect
  BGP state:          Connect
    Neighbor address: 10.100.2.12
`
	gb := parseBIRDSessions(bird)
	if gb["10.100.1.11"] != "Established" || gb["10.100.2.12"] != "Connect" || len(gb) != 2 {
		t.Fatalf("BIRD: %v", gb)
	}
	nodes := (&Options{}).nodes(3)
	if m := notEstablished(gb, nodes); len(m) != 2 || !strings.Contains(m[0], "n2 (10.100.2.12: Connect)") || !strings.Contains(m[1], "n3 (10.100.1.13: none)") {
		t.Fatalf("notEstablished: %v", m)
	}
}
