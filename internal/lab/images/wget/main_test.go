package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWget(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hostname":
			w.Header().Set("X-Seen-Header", r.Header.Get("X-Probe"))
			_, _ = w.Write([]byte("pod-a"))
		case "/slow":
			time.Sleep(2 * time.Second)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	// A listener that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	t.Chdir(dir)

	for _, tc := range []struct {
		args       []string
		status     int
		stdout     string
		stderrHas  string
		file, body string
	}{
		{args: []string{"-q", "-T", "1", "-O", "-", srv.URL + "/hostname"}, stdout: "pod-a"},
		{args: []string{"-qT1", "-O-", srv.URL + "/hostname"}, stdout: "pod-a"},
		{args: []string{"--timeout=1", "-q", "-O", "-", strings.TrimPrefix(srv.URL, "http://") + "/hostname"}, stdout: "pod-a"},
		{args: []string{"-q", srv.URL + "/hostname"}, file: "hostname", body: "pod-a"},
		{args: []string{"-q", "-O", "out.txt", srv.URL + "/hostname"}, file: "out.txt", body: "pod-a"},
		{args: []string{"-S", "--header", "X-Probe: 7", "-O", "/dev/null", srv.URL + "/hostname"}, stderrHas: "X-Seen-Header: 7"},
		{args: []string{"-s", "-q", srv.URL + "/hostname"}},
		{args: []string{"-q", "-O", "-", srv.URL + "/missing"}, status: 1, stderrHas: "server returned error: HTTP/1.1 404 Not Found"},
		{args: []string{"-q", "-T", "0.5", "-O", "-", srv.URL + "/slow"}, status: 1, stderrHas: "download timed out"},
		{args: []string{"-q", "-T", "0.5", "-O", "-", "http://" + ln.Addr().String() + "/"}, status: 1, stderrHas: "download timed out"},
		{args: []string{"-q", "-O", "-", "http://127.0.0.1:1/"}, status: 1, stderrHas: "can't connect to remote host"},
		{args: []string{"-x", srv.URL}, status: 1, stderrHas: "unrecognized option '-x'"},
		{args: []string{"-T"}, status: 1, stderrHas: "option requires an argument: -T"},
		{args: []string{"-T", "soon", srv.URL}, status: 1, stderrHas: `invalid timeout "soon"`},
		{args: []string{"-q"}, status: 1, stderrHas: "no URL given"},
	} {
		var stdout, stderr bytes.Buffer
		status := run(tc.args, &stdout, &stderr)
		if status != tc.status || (tc.stdout != "" && stdout.String() != tc.stdout) || !strings.Contains(stderr.String(), tc.stderrHas) {
			t.Errorf("wget %q: status %d, stdout %q, stderr %q; want %d, %q, stderr with %q", tc.args, status, stdout.String(), stderr.String(), tc.status, tc.stdout, tc.stderrHas)
		}
		if tc.file != "" {
			b, err := os.ReadFile(filepath.Join(dir, tc.file))
			if err != nil || string(b) != tc.body {
				t.Errorf("wget %q wrote %q to %s (%v), want %q", tc.args, b, tc.file, err, tc.body)
			}
		}
	}
}
