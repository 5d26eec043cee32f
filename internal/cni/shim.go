package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Shim is the whole logic of the strait CNI binary: skel decodes the
// environment and stdin, the shim forwards each verb to the agent and prints
// the agent's result in the version the configuration asked for.
type Shim struct {
	// Stdout receives ADD results.
	Stdout io.Writer
	// OpenLog opens the log file named by the configuration (nil: os.OpenFile).
	OpenLog func(path string) (io.WriteCloser, error)
}

// Funcs returns the skel entry points.
func (s *Shim) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    func(a *skel.CmdArgs) error { return s.run(CmdAdd, a) },
		Del:    func(a *skel.CmdArgs) error { return s.run(CmdDel, a) },
		Check:  func(a *skel.CmdArgs) error { return s.run(CmdCheck, a) },
		GC:     func(a *skel.CmdArgs) error { return s.run(CmdGC, a) },
		Status: func(a *skel.CmdArgs) error { return s.run(CmdStatus, a) },
	}
}

func (s *Shim) logger(conf *NetConf) (*slog.Logger, func()) {
	if conf.LogFile == "" {
		return slog.New(slog.DiscardHandler), func() {}
	}
	open := s.OpenLog
	if open == nil {
		open = func(p string) (io.WriteCloser, error) {
			return os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		}
	}
	f, err := open(conf.LogFile)
	if err != nil {
		// Logging must never fail a pod; say so on stderr, which runtimes log.
		fmt.Fprintf(os.Stderr, "strait: cannot open log file %s: %v\n", conf.LogFile, err)
		return slog.New(slog.DiscardHandler), func() {}
	}
	lvl := slog.LevelInfo
	_ = lvl.UnmarshalText([]byte(conf.LogLevel))
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: lvl})), func() { _ = f.Close() }
}

func (s *Shim) run(cmd string, a *skel.CmdArgs) error {
	conf, err := ParseNetConf(a.StdinData)
	if err != nil {
		return err
	}
	log, closeLog := s.logger(conf)
	defer closeLog()
	start := time.Now()
	err = s.call(cmd, a, conf)
	log.Debug("cni call", "command", cmd, "containerID", a.ContainerID, "ifName", a.IfName, "netns", a.Netns, "duration", time.Since(start))
	if err != nil {
		log.Error("cni call failed", "command", cmd, "containerID", a.ContainerID, "ifName", a.IfName, "error", err)
	}
	return err
}

func (s *Shim) call(cmd string, a *skel.CmdArgs, conf *NetConf) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(conf.TimeoutSeconds)*time.Second)
	defer cancel()
	client := &Client{SocketPath: conf.SocketPath}
	resp, err := client.Do(ctx, &Request{
		Command: cmd, ContainerID: a.ContainerID, Netns: a.Netns, IfName: a.IfName, Args: a.Args, Config: a.StdinData,
	})
	if err != nil {
		code := types.ErrTryAgainLater
		if cmd == CmdStatus {
			code = CodeNotReady
		}
		msg := "strait: agent not reachable"
		if !errors.Is(err, ErrAgentUnreachable) {
			msg = "strait: call to agent failed"
		}
		return types.NewError(code, msg, err.Error())
	}
	if resp.Error != nil {
		return resp.Error
	}
	if cmd != CmdAdd {
		return nil
	}
	res, err := current.NewResult(resp.Result)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "strait: cannot decode agent result", err.Error())
	}
	ours, err := current.GetResult(res)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "strait: cannot convert agent result", err.Error())
	}
	if conf.PrevResult != nil {
		if ours, err = MergePrevResult(conf.PrevResult, ours); err != nil {
			return types.NewError(types.ErrDecodingFailure, "strait: cannot merge prevResult", err.Error())
		}
	}
	out, err := ours.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "strait: cannot express result in cniVersion "+conf.CNIVersion, err.Error())
	}
	return out.PrintTo(s.Stdout)
}

// MergePrevResult returns prev with ours appended, as the spec asks of a
// plugin that is not first in a chain: interfaces, IPs (with their interface
// indices shifted) and routes of both, DNS from prev unless it is empty.
func MergePrevResult(prevRaw types.Result, ours *current.Result) (*current.Result, error) {
	prev, err := current.GetResult(prevRaw)
	if err != nil {
		return nil, fmt.Errorf("convert prevResult: %w", err)
	}
	merged := *prev
	offset := len(prev.Interfaces)
	merged.Interfaces = append(append([]*current.Interface{}, prev.Interfaces...), ours.Interfaces...)
	merged.IPs = append([]*current.IPConfig{}, prev.IPs...)
	for _, ip := range ours.IPs {
		c := ip.Copy()
		if c.Interface != nil {
			c.Interface = current.Int(*c.Interface + offset)
		}
		merged.IPs = append(merged.IPs, c)
	}
	merged.Routes = append(append([]*types.Route{}, prev.Routes...), ours.Routes...)
	if merged.DNS.IsEmpty() {
		merged.DNS = ours.DNS
	}
	return &merged, nil
}
