// Package agent is the node agent: it loads the crash-safe IPAM store, owns
// the datapath through its narrow interface, and serves the CNI API on a unix
// socket. Later capabilities (informers, BGP, flows) hang off the same Run.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/strait-net/strait/internal/bgp"
	"github.com/strait-net/strait/internal/cni"
	"github.com/strait-net/strait/internal/ipam"
)

// Deps are the agent's injected dependencies; zero values get the real ones.
type Deps struct {
	Logger *slog.Logger
	// Datapath opens the kernel side (the Linux datapath in production).
	Datapath func(log *slog.Logger) (PodDatapath, func(), error)
	// OpenStore opens the IPAM store (bbolt under StateDir in production).
	OpenStore func(path string) (ipam.Store, error)
	// StoreRetry is how long to wait between attempts to open a busy store.
	StoreRetry time.Duration
	// BGPSpeaker builds the BGP speaker (GoBGP in production).
	BGPSpeaker bgp.Factory
}

// Agent is one node's agent.
type Agent struct {
	cfg     *Config
	deps    Deps
	log     *slog.Logger
	metrics *metrics

	mu    sync.RWMutex
	alloc Allocator
	// For the CLI API, set once Run has them (guarded by mu).
	ipamAlloc *ipam.Allocator
	cluster   *clusterController
	dp        PodDatapath
	notReady  error
	flowExp   *flows // the flow exporter, when enabled (flows.go)

	// bgp is the BGP controller when bgp.enabled (bgp_controller.go).
	bgp *bgpController
}

// New validates cfg and returns an agent ready to Run.
func New(cfg *Config, deps Deps) (*Agent, error) {
	if err := cfg.Default(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.OpenStore == nil {
		deps.OpenStore = func(p string) (ipam.Store, error) { return ipam.OpenBolt(p) }
	}
	if deps.Datapath == nil {
		deps.Datapath = openLinuxDatapath
	}
	if deps.StoreRetry == 0 {
		deps.StoreRetry = time.Second
	}
	if deps.BGPSpeaker == nil {
		deps.BGPSpeaker = bgp.New
	}
	return &Agent{cfg: cfg, deps: deps, log: deps.Logger, notReady: errors.New("starting"), metrics: newMetrics()}, nil
}

func (a *Agent) ready() error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.notReady
}

func (a *Agent) setNotReady(err error) {
	a.mu.Lock()
	a.notReady = err
	a.mu.Unlock()
}

func (a *Agent) allocator() Allocator {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.alloc
}

// Run serves until ctx is cancelled. The CNI socket is served from the start
// so STATUS can say why the agent is not ready yet.
func (a *Agent) Run(ctx context.Context) error {
	dp, closeDP, err := a.deps.Datapath(a.log)
	if err != nil {
		return fmt.Errorf("open datapath: %w", err)
	}
	defer closeDP()
	if err := dp.EnsureHost(ctx); err != nil {
		return fmt.Errorf("prepare node: %w", err)
	}

	h := &cniHandler{log: a.log, mtu: a.cfg.MTU, ready: a.ready, alloc: a.allocator, dp: dp}
	ln, err := listenUnix(a.cfg.SocketPath)
	if err != nil {
		return err
	}
	if a.cfg.HealthAddr != "" && a.cfg.HealthAddr != "off" {
		if err := a.serveHealth(ctx, a.cfg.HealthAddr); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/cni/", cni.NewServer(h, a.log, a.metrics.observeCNI))
	a.registerAPI(mux)
	a.registerBGPAPI(mux)
	a.registerFlowsAPI(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer func() {
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	a.log.Info("serving CNI", "socket", a.cfg.SocketPath, "node", a.cfg.NodeName)

	store, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	var pools []netip.Prefix
	if a.cfg.IPAMMode == IPAMStatic {
		pools, _ = a.cfg.Pools()
	}
	alloc, err := ipam.New(store, pools)
	if err != nil {
		return fmt.Errorf("load IPAM state: %w", err)
	}
	var handlerAlloc Allocator = alloc
	if a.cfg.IPAMMode != IPAMStatic {
		a.setNotReady(errors.New("joining the cluster"))
		cc, err := a.startCluster(ctx, dp, alloc)
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.cluster = cc
		a.mu.Unlock()
		if err := a.startServiceRouting(ctx, cc.c); err != nil {
			return err
		}
		if a.cfg.IPAMMode == IPAMBlocks {
			handlerAlloc = blockAllocator{Allocator: alloc, cc: cc}
		}
		h.mtu = cc.podMTU
		if a.cfg.FastPath.Enabled {
			h.podsChanged = cc.kickFastPath
		}
		pools = alloc.Pools()
	}
	a.mu.Lock()
	a.alloc, a.ipamAlloc, a.dp = handlerAlloc, alloc, dp
	a.mu.Unlock()
	if err := removeOrphanLinks(ctx, dp, alloc, a.log); err != nil {
		a.log.Warn("startup cleanup incomplete", "error", err)
	}
	a.setNotReady(nil)
	if err := a.startFlows(ctx, dp, alloc, a.apiState().cluster); err != nil {
		a.log.Error("flow exporter not started; pod networking is not affected", "error", err)
	}
	a.log.Info("ready", "mode", a.cfg.IPAMMode, "pools", fmt.Sprint(pools), "allocations", len(alloc.List()), "mtu", h.mtu)
	if err := a.writeConflist(); err != nil {
		return err
	}

	select {
	case <-ctx.Done():
		a.setNotReady(errors.New("shutting down"))
		return nil
	case err := <-serveErr:
		return fmt.Errorf("CNI server: %w", err)
	}
}

// openStore opens the IPAM store, retrying while another process (an old
// agent still exiting) holds it, and reporting that through STATUS.
func (a *Agent) openStore(ctx context.Context) (ipam.Store, error) {
	path := filepath.Join(a.cfg.StateDir, "ipam.db")
	for {
		s, err := a.deps.OpenStore(path)
		if err == nil {
			return s, nil
		}
		a.setNotReady(fmt.Errorf("IPAM store not loaded: %w", err))
		a.log.Warn("IPAM store not available, retrying", "path", path, "error", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open IPAM store %s: %w", path, err)
		case <-time.After(a.deps.StoreRetry):
		}
	}
}

// listenUnix listens on path, replacing a stale socket file but refusing to
// steal the socket of a live agent.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		_ = c.Close()
		return nil, fmt.Errorf("socket %s is served by another agent", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return ln, nil
}

// Conflist renders the CNI network configuration list for this agent.
func (c *Config) Conflist() ([]byte, error) {
	self := map[string]any{"type": "strait", "socketPath": c.SocketPath}
	if c.CNI.LogFile != "" {
		self["logFile"] = c.CNI.LogFile
	}
	if c.CNI.LogLevel != "" {
		self["logLevel"] = c.CNI.LogLevel
	}
	plugins := []any{self}
	for _, raw := range c.CNI.Chained {
		plugins = append(plugins, raw)
	}
	return json.MarshalIndent(map[string]any{
		"cniVersion": c.CNI.CNIVersion,
		"name":       c.CNI.NetworkName,
		"plugins":    plugins,
	}, "", "  ")
}

// writeConflist installs the conflist atomically (write, fsync, rename).
func (a *Agent) writeConflist() error {
	if a.cfg.CNI.ConfDir == "" {
		return nil
	}
	data, err := a.cfg.Conflist()
	if err != nil {
		return fmt.Errorf("render conflist: %w", err)
	}
	if err := os.MkdirAll(a.cfg.CNI.ConfDir, 0o755); err != nil {
		return fmt.Errorf("create CNI conf dir: %w", err)
	}
	final := filepath.Join(a.cfg.CNI.ConfDir, a.cfg.CNI.ConfName)
	tmp, err := os.CreateTemp(a.cfg.CNI.ConfDir, ".strait-*.tmp")
	if err != nil {
		return fmt.Errorf("write conflist: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), final)
	}
	if err != nil {
		return fmt.Errorf("write conflist %s: %w", final, err)
	}
	a.log.Info("installed CNI configuration", "path", final)
	return nil
}
