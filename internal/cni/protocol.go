package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Commands as they travel on the wire (CNI_COMMAND).
const (
	CmdAdd    = "ADD"
	CmdDel    = "DEL"
	CmdCheck  = "CHECK"
	CmdStatus = "STATUS"
	CmdGC     = "GC"
)

// Request is one CNI invocation as the shim forwards it to the agent.
type Request struct {
	Command     string          `json:"command"`
	ContainerID string          `json:"containerID,omitempty"`
	Netns       string          `json:"netns,omitempty"`
	IfName      string          `json:"ifName,omitempty"`
	Args        string          `json:"args,omitempty"`
	Config      json.RawMessage `json:"config"`
}

// Response carries either a result (ADD; in the current spec version, the
// shim converts it) or a CNI error.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *types.Error    `json:"error,omitempty"`
}

// Attachment is a decoded ADD/DEL/CHECK request.
type Attachment struct {
	ContainerID string
	Netns       string
	IfName      string
	Pod         PodIdentity
	Conf        *NetConf
}

// Handler is what the agent implements. Errors that are *types.Error keep
// their code; any other error is reported as code 999 with its text.
type Handler interface {
	Add(ctx context.Context, a *Attachment) (*current.Result, error)
	Del(ctx context.Context, a *Attachment) error
	// Check verifies the attachment; prev is the chain's result, if given.
	Check(ctx context.Context, a *Attachment, prev *current.Result) error
	Status(ctx context.Context, conf *NetConf) error
	GC(ctx context.Context, conf *NetConf, valid []types.GCAttachment) error
}

// requestPath is the single endpoint on the agent's CNI socket.
const requestPath = "/cni/v1"

// Observer is told about every request served: its command, whether it
// failed, and how long it took (metrics).
type Observer func(command string, failed bool, d time.Duration)

// NewServer returns the HTTP handler the agent serves on its unix socket.
// Observers are optional.
func NewServer(h Handler, log *slog.Logger, observers ...Observer) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+requestPath, func(w http.ResponseWriter, r *http.Request) {
		var req Request
		body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		var resp Response
		if err != nil {
			resp.Error = types.NewError(types.ErrDecodingFailure, "strait agent: cannot decode request", err.Error())
		} else {
			start := time.Now()
			resp = dispatch(r.Context(), h, &req)
			lvl := slog.LevelInfo
			if resp.Error != nil {
				lvl = slog.LevelWarn
			}
			log.Log(r.Context(), lvl, "cni request", "command", req.Command, "containerID", req.ContainerID,
				"ifName", req.IfName, "duration", time.Since(start), "error", errText(resp.Error))
			for _, o := range observers {
				o(req.Command, resp.Error != nil, time.Since(start))
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&resp)
	})
	return mux
}

func errText(e *types.Error) string {
	if e == nil {
		return ""
	}
	return e.Error()
}

func dispatch(ctx context.Context, h Handler, req *Request) Response {
	conf, err := ParseNetConf(req.Config)
	if err != nil {
		return Response{Error: asCNIError(err)}
	}
	switch req.Command {
	case CmdStatus:
		return Response{Error: asCNIError(h.Status(ctx, conf))}
	case CmdGC:
		return Response{Error: asCNIError(h.GC(ctx, conf, conf.ValidAttachments))}
	case CmdAdd, CmdDel, CmdCheck:
	default:
		return Response{Error: types.NewError(types.ErrInvalidEnvironmentVariables, "strait agent: unknown CNI_COMMAND", req.Command)}
	}
	if req.ContainerID == "" || req.IfName == "" {
		return Response{Error: types.NewError(types.ErrInvalidEnvironmentVariables, "strait agent: CNI_CONTAINERID and CNI_IFNAME are required", "")}
	}
	if req.Netns == "" && req.Command != CmdDel {
		return Response{Error: types.NewError(types.ErrInvalidEnvironmentVariables, "strait agent: CNI_NETNS is required for "+req.Command, "")}
	}
	pod, err := ParsePodIdentity(req.Args)
	if err != nil {
		return Response{Error: asCNIError(err)}
	}
	a := &Attachment{ContainerID: req.ContainerID, Netns: req.Netns, IfName: req.IfName, Pod: pod, Conf: conf}
	switch req.Command {
	case CmdAdd:
		res, err := h.Add(ctx, a)
		if err != nil {
			return Response{Error: asCNIError(err)}
		}
		raw, err := json.Marshal(res)
		if err != nil {
			return Response{Error: types.NewError(types.ErrInternal, "strait agent: encode result", err.Error())}
		}
		return Response{Result: raw}
	case CmdDel:
		return Response{Error: asCNIError(h.Del(ctx, a))}
	default:
		var prev *current.Result
		if conf.PrevResult != nil {
			p, err := current.GetResult(conf.PrevResult)
			if err != nil {
				return Response{Error: types.NewError(types.ErrDecodingFailure, "strait agent: convert prevResult", err.Error())}
			}
			prev = p
		}
		return Response{Error: asCNIError(h.Check(ctx, a, prev))}
	}
}

func asCNIError(err error) *types.Error {
	if err == nil {
		return nil
	}
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// Client talks to the agent's CNI socket.
type Client struct {
	SocketPath string
	Timeout    time.Duration
}

// ErrAgentUnreachable wraps dial failures: the agent is not running or its
// socket is missing.
var ErrAgentUnreachable = errors.New("strait agent unreachable")

// Do sends req and returns the agent's response.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	var dialErr error
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", c.SocketPath)
			if err != nil {
				dialErr = err
			}
			return conn, err
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: c.Timeout}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://strait-agent"+requestPath, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(hreq)
	if err != nil {
		if dialErr != nil {
			return nil, fmt.Errorf("%w at %s: %w", ErrAgentUnreachable, c.SocketPath, dialErr)
		}
		return nil, fmt.Errorf("call agent at %s: %w", c.SocketPath, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("call agent at %s: HTTP %d: %s", c.SocketPath, resp.StatusCode, msg)
	}
	var out Response
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode agent response: %w", err)
	}
	return &out, nil
}
