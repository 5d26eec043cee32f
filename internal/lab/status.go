package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/strait-net/strait/internal/cni"
)

// Status prints, in plain words, what the lab runs and what is not healthy,
// and returns an error naming the number of problems.
func Status(ctx context.Context, o Options) error {
	s, err := o.load()
	if err != nil {
		return err
	}
	if len(s.Processes) == 0 && len(s.Namespaces) == 0 {
		o.logf("the lab is down")
		return nil
	}
	if len(s.Cluster.Nodes) == 0 {
		return cniLabStatus(ctx, o, s)
	}
	var problems []string
	o.logf("daemons:")
	for _, p := range s.Processes {
		state := "running"
		if !alive(p) {
			state = "NOT RUNNING"
			problems = append(problems, fmt.Sprintf("%s (pid %d) is not running: see `strait-lab logs %s`", p.Name, p.PID, logsArgs(p.Name)))
		}
		o.logf("  %-26s pid %-7d %s", p.Name, p.PID, state)
	}
	for _, n := range s.Namespaces {
		if _, err := os.Stat(filepath.Join("/run/netns", n)); err != nil {
			problems = append(problems, "namespace "+n+" is missing")
		}
	}
	o.logf("agents:")
	for _, n := range s.Cluster.Nodes {
		sock := filepath.Join(o.nodeDirs(n).state, "cni.sock")
		state := "ready"
		if err := agentStatus(ctx, sock); err != nil {
			state = "NOT READY: " + err.Error()
			problems = append(problems, "strait-agent on "+n.Name+" is not ready: "+err.Error())
		}
		o.logf("  %-4s %s", n.Name, state)
	}
	problems = append(problems, routerStatus(o, s)...)
	if p := flowsStatus(ctx, o, s); p != "" {
		problems = append(problems, p)
	}
	c := ClusterOptions{K8sBinDir: s.Cluster.K8sBinDir}
	o.logf("nodes:")
	nodes, err := o.nodeConditions(ctx, c)
	if err != nil {
		problems = append(problems, "the API server does not answer: "+err.Error())
	}
	for _, n := range s.Cluster.Nodes {
		cond, ok := nodes[n.Name]
		switch {
		case !ok && err == nil:
			problems = append(problems, "node "+n.Name+" is not registered: see `strait-lab logs kubelet "+n.Name+"`")
			o.logf("  %-4s NOT REGISTERED", n.Name)
		case ok && cond.Status != "True":
			problems = append(problems, fmt.Sprintf("node %s is not Ready: %s: %s", n.Name, cond.Reason, cond.Message))
			o.logf("  %-4s NOT READY (%s)", n.Name, cond.Reason)
		case ok:
			o.logf("  %-4s Ready  %s %s  pods %s %s", n.Name, n.IPv4, n.IPv6, n.PodV4, n.PodV6)
		}
	}
	if err == nil {
		pods, perr := o.unhealthyPods(ctx, c)
		if perr != nil {
			problems = append(problems, perr.Error())
		}
		problems = append(problems, pods...)
	}
	if len(problems) == 0 {
		o.logf("\nall healthy")
		return nil
	}
	o.logf("\nnot healthy:")
	for _, p := range problems {
		o.logf("  - %s", p)
	}
	return fmt.Errorf("%d problems", len(problems))
}

// logsArgs turns a daemon name ("kubelet-n2") into `strait-lab logs`
// arguments ("kubelet n2").
func logsArgs(name string) string {
	i := strings.LastIndex(name, "-")
	if i < 0 || len(name) < i+3 || name[i+1] != 'n' {
		return name
	}
	for _, c := range name[i+2:] {
		if c < '0' || c > '9' {
			return name
		}
	}
	return name[:i] + " " + name[i+1:]
}

// agentStatus asks the agent's CNI server for STATUS, as a runtime would.
func agentStatus(ctx context.Context, sock string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cl := &cni.Client{SocketPath: sock, Timeout: 3 * time.Second}
	resp, err := cl.Do(ctx, &cni.Request{Command: cni.CmdStatus, Config: json.RawMessage(`{"cniVersion":"1.1.0","name":"strait","type":"strait","socketPath":"` + sock + `"}`)})
	if err != nil {
		return err
	}
	if resp.Error != nil {
		return fmt.Errorf("%s: %s", resp.Error.Msg, resp.Error.Details)
	}
	return nil
}

type condition struct{ Status, Reason, Message string }

func (o *Options) nodeConditions(ctx context.Context, c ClusterOptions) (map[string]condition, error) {
	out, err := o.kubectl(ctx, c, "get", "nodes", "-o", "json", "--request-timeout=5s")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name string }
			Status   struct {
				Conditions []struct{ Type, Status, Reason, Message string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("decode nodes: %w", err)
	}
	res := map[string]condition{}
	for _, n := range list.Items {
		for _, cnd := range n.Status.Conditions {
			if cnd.Type == "Ready" {
				res[n.Metadata.Name] = condition{cnd.Status, cnd.Reason, cnd.Message}
			}
		}
	}
	return res, nil
}

// unhealthyPods names pods that are not Running or Succeeded, with the
// reason their containers give.
func (o *Options) unhealthyPods(ctx context.Context, c ClusterOptions) ([]string, error) {
	out, err := o.kubectl(ctx, c, "get", "pods", "-A", "-o", "json", "--request-timeout=5s")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct{ Namespace, Name string }
			Spec     struct{ NodeName string }
			Status   struct {
				Phase             string
				ContainerStatuses []struct {
					State struct {
						Waiting *struct{ Reason, Message string }
					}
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("decode pods: %w", err)
	}
	var res []string
	for _, p := range list.Items {
		if p.Status.Phase == "Running" || p.Status.Phase == "Succeeded" {
			continue
		}
		why := p.Status.Phase
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil {
				why = w.Reason + ": " + w.Message
			}
		}
		res = append(res, fmt.Sprintf("pod %s/%s on %s is %s", p.Metadata.Namespace, p.Metadata.Name, p.Spec.NodeName, why))
	}
	return res, nil
}
