package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/strait-net/strait/internal/testutil"
)

func lockStore(t *testing.T, stateDir string) (release func()) {
	t.Helper()
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(stateDir, "ipam.db"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	released := false
	release = func() {
		if !released {
			released = true
			_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			_ = f.Close()
		}
	}
	t.Cleanup(release)
	return release
}

// shimResult is what the shim prints: a result or a CNI error.
type shimResult struct {
	CNIVersion string            `json:"cniVersion"`
	Code       uint              `json:"code"`
	Msg        string            `json:"msg"`
	Details    string            `json:"details"`
	IPs        []json.RawMessage `json:"ips"`
}

// runShim executes the strait binary as a runtime would, inside the node ns.
func runShim(t *testing.T, n *node, env map[string]string, stdin string) (shimResult, int) {
	t.Helper()
	args := []string{"netns", "exec", n.ns.Name, filepath.Join(n.binDir, "cni", "strait")}
	cmd := exec.Command("ip", args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var r shimResult
	if out.Len() > 0 {
		if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
			t.Fatalf("shim printed non-JSON %q: %v", out.String(), jerr)
		}
	}
	return r, code
}

// Bad input gets the spec's error code, a message naming what was wrong, and
// leaves nothing behind; results come in the version the config asked for.
func TestShimErrorsAndVersions(t *testing.T) {
	n := newNode(t, nodeOpts{})
	pod := testutil.NewNS(t)
	env := func(cmd, id string) map[string]string {
		return map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": id, "CNI_NETNS": pod.Path(), "CNI_IFNAME": "eth0",
			"CNI_PATH": filepath.Join(n.binDir, "cni"), "CNI_ARGS": "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1;IgnoreUnknown=1"}
	}
	conf := func(version, extra string) string {
		return `{"cniVersion":"` + version + `","name":"strait","type":"strait","socketPath":"` + n.socket + `"` + extra + `}`
	}
	cases := []struct {
		name     string
		env      map[string]string
		stdin    string
		code     uint
		mentions string
	}{
		{"undecodable config", env("ADD", "c1"), `{"cniVersion":`, 6, ""},
		{"relative socket path", env("ADD", "c1"), `{"cniVersion":"1.1.0","name":"strait","type":"strait","socketPath":"run/x.sock"}`, 7, "socketPath"},
		{"bad log level", env("ADD", "c1"), conf("1.1.0", `,"logLevel":"loud"`), 7, "logLevel"},
		{"ipam section", env("ADD", "c1"), conf("1.1.0", `,"ipam":{"type":"host-local"}`), 2, "ipam"},
		{"unsupported version", env("ADD", "c1"), conf("9.9.9", ""), 1, ""},
		{"missing container id", func() map[string]string { e := env("ADD", ""); delete(e, "CNI_CONTAINERID"); return e }(), conf("1.1.0", ""), 4, "CNI_CONTAINERID"},
		{"bad CNI_ARGS", func() map[string]string { e := env("ADD", "c1"); e["CNI_ARGS"] = "novalue"; return e }(), conf("1.1.0", ""), 4, "CNI_ARGS"},
		{"missing netns", func() map[string]string {
			e := env("ADD", "c1")
			e["CNI_NETNS"] = "/run/netns/strait-does-not-exist"
			return e
		}(), conf("1.1.0", ""), 3, "namespace"},
		{"agent socket missing", env("ADD", "c1"), `{"cniVersion":"1.1.0","name":"strait","type":"strait","socketPath":"/run/strait-test-nothing-here.sock"}`, 11, "not reachable"},
		{"status without agent", env("STATUS", ""), `{"cniVersion":"1.1.0","name":"strait","type":"strait","socketPath":"/run/strait-test-nothing-here.sock"}`, 50, "not reachable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, exit := runShim(t, n, c.env, c.stdin)
			if exit == 0 || r.Code != c.code {
				t.Fatalf("exit %d, code %d (%s: %s), want code %d", exit, r.Code, r.Msg, r.Details, c.code)
			}
			if !strings.Contains(r.Msg+" "+r.Details, c.mentions) {
				t.Fatalf("error %q / %q does not mention %q", r.Msg, r.Details, c.mentions)
			}
		})
	}
	if links := n.hostLinks(); len(links) != 0 {
		t.Fatalf("failed ADDs left host veths: %v", links)
	}

	// A failed ADD rolls back: the pod already has an eth0 of another kind.
	pod.MustRun(t, "ip", "link", "add", "eth0", "type", "bridge")
	r, exit := runShim(t, n, env("ADD", "clash"), conf("1.1.0", ""))
	if exit == 0 {
		t.Fatalf("ADD onto an existing eth0 succeeded: %+v", r)
	}
	if links := n.hostLinks(); len(links) != 0 {
		t.Fatalf("failed ADD left host veths: %v", links)
	}
	pod.MustRun(t, "ip", "link", "del", "eth0")

	// Results in every supported version.
	for i, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		id := "ver" + string(rune('a'+i))
		p := testutil.NewNS(t)
		e := env("ADD", id)
		e["CNI_NETNS"] = p.Path()
		r, exit := runShim(t, n, e, conf(v, ""))
		if exit != 0 || r.CNIVersion != v || len(r.IPs) != 2 {
			t.Fatalf("ADD at %s: exit %d, %+v", v, exit, r)
		}
		e["CNI_COMMAND"] = "DEL"
		if r, exit := runShim(t, n, e, conf(v, "")); exit != 0 {
			t.Fatalf("DEL at %s: exit %d, %+v", v, exit, r)
		}
	}
	if al := n.allocations(); len(al) != 0 {
		t.Fatalf("allocations left: %+v", al)
	}
}
