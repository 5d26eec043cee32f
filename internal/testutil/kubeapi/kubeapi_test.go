package kubeapi

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/strait-net/strait/internal/lab/k8sbin"
)

func TestAPIServerTier(t *testing.T) {
	c := Start(t, BinDir(t))
	if c.StartToReady <= 0 {
		t.Fatalf("StartToReady = %v", c.StartToReady)
	}
	t.Logf("start to ready: %v", c.StartToReady)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	v, err := c.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != k8sbin.Version {
		t.Errorf("server version %s, want %s", v.GitVersion, k8sbin.Version)
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeapi-tier"}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: ns.Name, Labels: map[string]string{"app": "strait"}},
		Data:       map[string]string{"cidr": "10.244.0.0/16", "v6": "fd42:244::/56"},
	}
	if _, err := c.Client.CoreV1().ConfigMaps(ns.Name).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create configmap: %v", err)
	}

	gotNS, err := c.Client.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get namespace: %v", err)
	}
	if gotNS.UID == "" || gotNS.Status.Phase != corev1.NamespaceActive {
		t.Errorf("namespace: uid %q phase %q", gotNS.UID, gotNS.Status.Phase)
	}
	gotCM, err := c.Client.CoreV1().ConfigMaps(ns.Name).Get(ctx, cm.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get configmap: %v", err)
	}
	if fmt.Sprint(gotCM.Data) != fmt.Sprint(cm.Data) || gotCM.Labels["app"] != "strait" {
		t.Errorf("configmap read back: %v %v", gotCM.Data, gotCM.Labels)
	}
	list, err := c.Client.CoreV1().ConfigMaps(ns.Name).List(ctx, metav1.ListOptions{LabelSelector: "app=strait"})
	if err != nil || len(list.Items) != 1 {
		t.Errorf("list by label: %v items, %v", len(list.Items), err)
	}

	// Servers only on loopback: every listening socket of both processes.
	for name, pid := range map[string]int{"etcd": c.EtcdPID, "kube-apiserver": c.APIServerPID} {
		addrs, err := listeners(pid)
		if err != nil {
			t.Fatal(err)
		}
		if len(addrs) == 0 {
			t.Errorf("%s: no listening sockets found", name)
		}
		for _, a := range addrs {
			if !a.Addr().IsLoopback() {
				t.Errorf("%s listens on %s, not loopback", name, a)
			}
		}
		t.Logf("%s (pid %d) listens on %v", name, pid, addrs)
	}
}

// listeners returns the TCP addresses pid listens on, from its socket
// inodes and /proc/net/tcp{,6}.
func listeners(pid int) ([]netip.AddrPort, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, fmt.Errorf("list fds of %d: %w", pid, err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if ino, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var out []netip.AddrPort
	for _, f := range []string{"tcp", "tcp6"} {
		file, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			return nil, fmt.Errorf("read sockets of %d: %w", pid, err)
		}
		sc := bufio.NewScanner(file)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] { // 0A: LISTEN
				continue
			}
			ap, err := parseProcAddr(fields[1])
			if err != nil {
				_ = file.Close()
				return nil, err
			}
			out = append(out, ap)
		}
		_ = file.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read sockets of %d: %w", pid, err)
		}
	}
	return out, nil
}

// parseProcAddr decodes /proc/net/tcp's "0100007F:1F90" (address as
// native-endian 32-bit words, port big-endian hex).
func parseProcAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	raw, err := hex.DecodeString(h)
	port, perr := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || perr != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("parse /proc/net address %q", s)
	}
	for i := 0; i < len(raw); i += 4 { // little-endian words (amd64, arm64)
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}
