package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// routerDir holds the lab's BGP objects (bgp.yaml).
func (o *Options) routerDir() string { return filepath.Join(o.Dir, "router") }

// startRouter writes the router's config and starts FRR (zebra, then bgpd)
// or BIRD in the router namespace, recording each daemon ("router" is the
// BGP daemon, so `strait-lab logs router` shows its log), then waits until
// it answers on its control socket.
func (o *Options) startRouter(ctx context.Context, s *State, kind string) error {
	// The daemons' folder is under /run, not the lab folder: FRR runs as
	// user frr, which may not enter the lab folder (a test's TempDir is 0700).
	dir, err := os.MkdirTemp("/run", o.prefix()+"router-")
	if err != nil {
		return fmt.Errorf("router dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	s.Router = &routerState{Kind: kind, Dir: dir}
	if err := o.save(s); err != nil {
		return err
	}
	nsName := o.ns("router")
	switch kind {
	case RouterFRR:
		// FRR's daemons run as user frr: the folder (sockets, pid files) must be theirs.
		if err := os.Chmod(dir, 0o777); err != nil {
			return err
		}
		files := map[string]string{
			filepath.Join(dir, "vtysh.conf"): "",
			filepath.Join(dir, "zebra.conf"): frrZebraConfig(),
			filepath.Join(dir, "bgpd.conf"):  frrBGPConfig(),
		}
		if err := writeFiles(files); err != nil {
			return err
		}
		if err := chownFRR(dir, files); err != nil {
			return err
		}
		frr := func(daemon string) []string {
			return []string{"/usr/lib/frr/" + daemon, "-f", filepath.Join(dir, daemon+".conf"), "-i", filepath.Join(dir, daemon+".pid"),
				"-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir, "-P", "0"}
		}
		if err := o.recordDaemon(s, "router-zebra", nsName, frr("zebra"), nil); err != nil {
			return err
		}
		if err := waitFor(ctx, 10*time.Second, func() error { _, err := os.Stat(filepath.Join(dir, "zserv.api")); return err }); err != nil {
			return fmt.Errorf("zebra did not start (see `strait-lab logs router-zebra`): %w", err)
		}
		if err := o.recordDaemon(s, "router", nsName, frr("bgpd"), nil); err != nil {
			return err
		}
	case RouterBIRD:
		conf := filepath.Join(dir, "bird.conf")
		if err := writeFiles(map[string]string{conf: birdConfig()}); err != nil {
			return err
		}
		if err := o.recordDaemon(s, "router", nsName, []string{"bird", "-f", "-c", conf, "-s", filepath.Join(dir, "bird.ctl"),
			"-P", filepath.Join(dir, "bird.pid")}, nil); err != nil {
			return err
		}
	default:
		return checkRouter(kind)
	}
	if err := waitFor(ctx, 15*time.Second, func() error { _, err := routerSessions(s.Router); return err }); err != nil {
		return fmt.Errorf("%s does not answer (see `strait-lab logs router`): %w", kind, err)
	}
	return nil
}

func chownFRR(dir string, files map[string]string) error {
	u, err := user.Lookup("frr")
	if err != nil {
		return fmt.Errorf("FRR's user: %w (install frr: make deps)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for p := range files {
		if err := os.Chown(p, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
	}
	return os.Chown(dir, uid, gid)
}

// routerSessions returns the router's BGP sessions: neighbour address ->
// state ("Established" when up).
func routerSessions(r *routerState) (map[string]string, error) {
	if r.Kind == RouterBIRD {
		out, err := exec.Command("birdc", "-s", filepath.Join(r.Dir, "bird.ctl"), "show", "protocols", "all").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("birdc show protocols: %w: %s", err, strings.TrimSpace(string(out)))
		}
		return parseBIRDSessions(string(out)), nil
	}
	out, err := exec.Command("vtysh", "--vty_socket", r.Dir, "-c", "show bgp summary json").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("vtysh show bgp summary: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return parseFRRSessions(out)
}

// parseFRRSessions reads `show bgp summary json` (both families' peers).
func parseFRRSessions(out []byte) (map[string]string, error) {
	var sum map[string]json.RawMessage
	if err := json.Unmarshal(out, &sum); err != nil {
		return nil, fmt.Errorf("decode show bgp summary: %w: %.200s", err, out)
	}
	res := map[string]string{}
	for _, fam := range []string{"ipv4Unicast", "ipv6Unicast"} {
		var f struct {
			Peers map[string]struct {
				State string `json:"state"`
			} `json:"peers"`
		}
		if raw, ok := sum[fam]; ok {
			if err := json.Unmarshal(raw, &f); err != nil {
				return nil, fmt.Errorf("decode %s: %w", fam, err)
			}
		}
		for addr, p := range f.Peers {
			if res[addr] == "" || res[addr] == "Established" {
				res[addr] = p.State
			}
		}
	}
	return res, nil
}

// parseBIRDSessions reads `birdc show protocols all`: the spawned dynamic
// protocols' neighbour addresses and BGP states.
func parseBIRDSessions(out string) map[string]string {
	res := map[string]string{}
	state := ""
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "BGP" && f[1] == "state:":
			state = strings.Join(f[2:], " ")
		case len(f) == 3 && f[0] == "Neighbor" && f[1] == "address:":
			if state != "" && !strings.Contains(f[2], "/") {
				res[f[2]] = state
			}
		case len(line) > 0 && line[0] != ' ' && line[0] != '\t':
			state = "" // a new protocol
		}
	}
	return res
}

// waitRouterSessions waits until the router has an Established session
// with every node.
func (o *Options) waitRouterSessions(ctx context.Context, r *routerState, nodes []labNode, timeout time.Duration) error {
	return waitFor(ctx, timeout, func() error {
		sess, err := routerSessions(r)
		if err != nil {
			return err
		}
		if missing := notEstablished(sess, nodes); len(missing) > 0 {
			return fmt.Errorf("no established BGP session with %s", strings.Join(missing, ", "))
		}
		return nil
	})
}

func notEstablished(sess map[string]string, nodes []labNode) []string {
	var missing []string
	for _, n := range nodes {
		if st := sess[n.IPv4]; st != "Established" {
			if st == "" {
				st = "none"
			}
			missing = append(missing, fmt.Sprintf("%s (%s: %s)", n.Name, n.IPv4, st))
		}
	}
	sort.Strings(missing)
	return missing
}

// routerStatus prints the router's sessions and returns the problems.
func routerStatus(o Options, s *State) []string {
	if s.Router == nil {
		return nil
	}
	o.logf("router (%s, AS %d):", s.Router.Kind, RouterASN)
	sess, err := routerSessions(s.Router)
	if err != nil {
		o.logf("  NOT ANSWERING: %v", err)
		return []string{"the lab router does not answer: " + err.Error() + ": see `strait-lab logs router`"}
	}
	for _, n := range s.Cluster.Nodes {
		st := sess[n.IPv4]
		if st == "" {
			st = "no session"
		}
		o.logf("  %-4s %-14s peer %-11s %s", n.Name, n.IPv4, routerPeerOf(n), st)
	}
	var problems []string
	for _, m := range notEstablished(sess, s.Cluster.Nodes) {
		problems = append(problems, "no BGP session between the router and "+m+": see `strait-lab logs strait-agent NODE`")
	}
	return problems
}

// applyRouterObjects creates the lab's BGPConfiguration, BGPPeers and
// LoadBalancerIPPool.
func (o *Options) applyRouterObjects(ctx context.Context, c ClusterOptions) error {
	p := filepath.Join(o.routerDir(), "bgp.yaml")
	if err := writeFiles(map[string]string{p: routerObjects()}); err != nil {
		return err
	}
	// The CRDs were just created: retry until the API serves them.
	return waitFor(ctx, 30*time.Second, func() error { _, err := o.kubectl(ctx, c, "apply", "-f", p); return err })
}
