package e2e

import (
	"fmt"
	"strings"
	"time"

	"github.com/strait-net/strait/internal/ctl/check"
)

// An exec through the API server, kubelet and containerd now and then
// returns with the end of a short-lived command's output missing (seen on
// the lab under load, with kubectl and client-go alike). The test reads
// pod output only in ways that tell a lost tail from a real result:
// podRead reruns a read-only script until its end marker comes back, and
// commands that must run once (servers, long pings) write their output to
// a file in the pod that podRead then reads.

// podRead runs a read-only shell script in pod and returns its standard
// output once it came back whole (check.MarkScript: the end marker with the
// script's exit status), rerunning it when the marker is missing. A script
// that ran and failed is an error, not rerun.
func (e *labEnv) podRead(pod, script string) (string, error) {
	var last string
	for attempt := 0; attempt < 6; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 300 * time.Millisecond)
		}
		out, _ := e.kubectl("exec", pod, "--", "sh", "-c", check.MarkScript(script))
		body, status, ok := check.SplitMarked(out)
		if !ok {
			last = out
			e.t.Logf("exec in %s came back without its end marker (attempt %d), rerunning: %q", pod, attempt+1, out)
			continue
		}
		if status != "0" {
			return body, fmt.Errorf("%q in %s exited %s: %s", script, pod, status, body)
		}
		return body, nil
	}
	return "", fmt.Errorf("%q in %s: output never came back whole: %q", script, pod, last)
}

// mustPodRead is podRead failing the test.
func (e *labEnv) mustPodRead(pod, script string) string {
	e.t.Helper()
	out, err := e.podRead(pod, script)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// podRunToFile runs script once in pod with its output (both streams) in
// file, and returns that output read back whole. The exec's own output is
// not used.
func (e *labEnv) podRunToFile(pod, script, file string) (string, error) {
	if _, err := e.podRead(pod, "rm -f "+file+" "+file+".done"); err != nil {
		return "", err
	}
	_, execErr := e.kubectl("exec", pod, "--", "sh", "-c", fmt.Sprintf("{ %s\n} > %s 2>&1; echo $? > %s.done", script, file, file))
	out, err := e.podRead(pod, fmt.Sprintf("cat %s.done && cat %s", file, file))
	if err != nil {
		return "", fmt.Errorf("%w (exec: %v)", err, execErr)
	}
	status, rest, _ := strings.Cut(out, "\n")
	if strings.TrimSpace(status) != "0" {
		return rest, fmt.Errorf("%q in %s exited %s: %s", script, pod, strings.TrimSpace(status), rest)
	}
	return rest, nil
}
