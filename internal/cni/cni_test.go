package cni

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestParseNetConf(t *testing.T) {
	for _, c := range []struct {
		in    string
		code  uint
		field string
	}{
		{`{`, types.ErrDecodingFailure, ""},
		{`{"cniVersion":"1.1.0","type":"strait"}`, types.ErrInvalidNetworkConfig, "name"},
		{`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local"}}`, types.ErrUnsupportedField, "ipam"},
		{`{"cniVersion":"1.1.0","name":"n","socketPath":"x.sock"}`, types.ErrInvalidNetworkConfig, "socketPath"},
		{`{"cniVersion":"1.1.0","name":"n","logFile":"x.log"}`, types.ErrInvalidNetworkConfig, "logFile"},
		{`{"cniVersion":"1.1.0","name":"n","logLevel":"chatty"}`, types.ErrInvalidNetworkConfig, "logLevel"},
		{`{"cniVersion":"1.1.0","name":"n","timeoutSeconds":-1}`, types.ErrInvalidNetworkConfig, "timeoutSeconds"},
	} {
		_, err := ParseNetConf([]byte(c.in))
		var e *types.Error
		if !errors.As(err, &e) || e.Code != c.code || !strings.Contains(e.Msg, c.field) {
			t.Errorf("ParseNetConf(%s) = %v, want code %d naming %q", c.in, err, c.code, c.field)
		}
	}
	conf, err := ParseNetConf([]byte(`{"cniVersion":"1.0.0","name":"n","type":"strait"}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.SocketPath != DefaultSocketPath || conf.TimeoutSeconds != 60 {
		t.Fatalf("defaults not applied: %+v", conf)
	}
}

func TestParsePodIdentity(t *testing.T) {
	id, err := ParsePodIdentity("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=c")
	if err != nil {
		t.Fatal(err)
	}
	if id != (PodIdentity{Namespace: "ns", Name: "web-0", UID: "u-1"}) {
		t.Fatalf("got %+v", id)
	}
	if _, err := ParsePodIdentity("K8S_POD_NAME"); err == nil {
		t.Fatal("a key without value was accepted")
	}
}

func TestMergePrevResult(t *testing.T) {
	prev := &current.Result{CNIVersion: "1.1.0",
		Interfaces: []*current.Interface{{Name: "other0"}},
		IPs:        []*current.IPConfig{{Interface: current.Int(0), Address: mustNet("10.1.0.2/24")}},
		DNS:        types.DNS{Nameservers: []string{"10.96.0.10"}},
	}
	ours := &current.Result{CNIVersion: "1.1.0",
		Interfaces: []*current.Interface{{Name: "strtX"}, {Name: "eth0", Sandbox: "/run/netns/p"}},
		IPs:        []*current.IPConfig{{Interface: current.Int(1), Address: mustNet("10.244.0.5/32")}},
	}
	m, err := MergePrevResult(prev, ours)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Interfaces) != 3 || *m.IPs[1].Interface != 2 || m.Interfaces[2].Name != "eth0" || len(m.DNS.Nameservers) != 1 {
		t.Fatalf("merged wrongly: %+v", m)
	}
	if *ours.IPs[0].Interface != 1 {
		t.Fatal("merge mutated our result")
	}
}

func mustNet(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return *n
}

// fakeHandler records calls and answers as configured.
type fakeHandler struct {
	calls []string
	err   error
	valid []types.GCAttachment
	pod   PodIdentity
}

func (f *fakeHandler) Add(_ context.Context, a *Attachment) (*current.Result, error) {
	f.calls = append(f.calls, "ADD "+a.ContainerID)
	f.pod = a.Pod
	if f.err != nil {
		return nil, f.err
	}
	return &current.Result{CNIVersion: "1.1.0",
		Interfaces: []*current.Interface{{Name: "strtX"}, {Name: a.IfName, Sandbox: a.Netns}},
		IPs:        []*current.IPConfig{{Interface: current.Int(1), Address: mustNet("10.244.0.5/32")}}}, nil
}
func (f *fakeHandler) Del(_ context.Context, a *Attachment) error {
	f.calls = append(f.calls, "DEL "+a.ContainerID)
	return f.err
}
func (f *fakeHandler) Check(_ context.Context, a *Attachment, prev *current.Result) error {
	f.calls = append(f.calls, "CHECK "+a.ContainerID)
	if prev == nil {
		return errors.New("no prevResult")
	}
	return f.err
}
func (f *fakeHandler) Status(context.Context, *NetConf) error {
	f.calls = append(f.calls, "STATUS")
	return f.err
}
func (f *fakeHandler) GC(_ context.Context, _ *NetConf, v []types.GCAttachment) error {
	f.calls = append(f.calls, "GC")
	f.valid = v
	return f.err
}

func serve(t *testing.T, h Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: NewServer(h, nil)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

// The shim and the server round-trip every verb, convert results to the
// requested version, merge prevResult, and keep the handler's error codes.
func TestShimServerRoundTrip(t *testing.T) {
	h := &fakeHandler{}
	sock := serve(t, h)
	var out bytes.Buffer
	shim := &Shim{Stdout: &out}
	f := shim.Funcs()
	args := func(conf string) *skel.CmdArgs {
		return &skel.CmdArgs{ContainerID: "c1", Netns: "/run/netns/p", IfName: "eth0",
			Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", StdinData: []byte(conf)}
	}
	conf := func(v, extra string) string {
		return `{"cniVersion":"` + v + `","name":"n","type":"strait","socketPath":"` + sock + `"` + extra + `}`
	}
	if err := f.Add(args(conf("0.4.0", ""))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"cniVersion": "0.4.0"`) || h.pod.Name != "p" {
		t.Fatalf("ADD result %s, pod %+v", out.String(), h.pod)
	}
	out.Reset()
	prev := `,"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"x0"}],"ips":[{"interface":0,"address":"10.1.0.2/24"}]}`
	if err := f.Add(args(conf("1.1.0", prev))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"x0"`) || !strings.Contains(out.String(), `"interface": 2`) {
		t.Fatalf("prevResult not merged: %s", out.String())
	}
	if err := f.Check(args(conf("1.1.0", prev))); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := f.GC(args(conf("1.1.0", `,"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]`))); err != nil || len(h.valid) != 1 {
		t.Fatalf("GC: %v, valid %v", err, h.valid)
	}
	h.err = types.NewError(types.ErrTryAgainLater, "busy", "pool full")
	err := f.Add(args(conf("1.1.0", "")))
	var e *types.Error
	if !errors.As(err, &e) || e.Code != 11 || e.Details != "pool full" {
		t.Fatalf("error not passed through: %v", err)
	}
	h.err = errors.New("boom")
	if err := f.Del(args(conf("1.1.0", ""))); !errors.As(err, &e) || e.Code != types.ErrInternal || e.Msg != "boom" {
		t.Fatalf("plain error not mapped to 999: %v", err)
	}
	want := []string{"ADD c1", "ADD c1", "CHECK c1", "GC", "ADD c1", "DEL c1"}
	if strings.Join(h.calls, ",") != strings.Join(want, ",") {
		t.Fatalf("calls %v, want %v", h.calls, want)
	}
}

func TestShimAgentUnreachable(t *testing.T) {
	shim := &Shim{Stdout: &bytes.Buffer{}}
	conf := `{"cniVersion":"1.1.0","name":"n","type":"strait","socketPath":"` + filepath.Join(t.TempDir(), "none.sock") + `"}`
	a := &skel.CmdArgs{ContainerID: "c", Netns: "/x", IfName: "eth0", StdinData: []byte(conf)}
	var e *types.Error
	if err := shim.Funcs().Add(a); !errors.As(err, &e) || e.Code != types.ErrTryAgainLater {
		t.Fatalf("ADD without agent: %v, want code 11", err)
	}
	if err := shim.Funcs().Status(a); !errors.As(err, &e) || e.Code != CodeNotReady {
		t.Fatalf("STATUS without agent: %v, want code 50", err)
	}
}
