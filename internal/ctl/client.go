// Package ctl is straitctl: it reads the agent's local CLI API over the
// agent's unix socket and renders it as tables, JSON or YAML.
package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/strait-net/strait/internal/ctl/api"
)

// Client talks to one agent over its unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the agent serving socket.
func NewClient(socket string, timeout time.Duration) *Client {
	d := net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr, Timeout: timeout}}
}

// UnreachableError says the agent's socket could not be connected to.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the strait agent at %s (is it running? are you root?): %v", e.Socket, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Get fetches path (an api.Path*) and decodes the answer into v.
func (c *Client) Get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://strait-agent"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return &UnreachableError{Socket: c.socket, Err: op.Err}
		}
		return fmt.Errorf("strait agent at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("strait agent at %s: read answer: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			msg += " (is the agent older than straitctl?)"
		}
		return fmt.Errorf("strait agent at %s: GET %s: %s: %s", c.socket, path, resp.Status, msg)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("strait agent at %s: GET %s: bad answer: %w", c.socket, path, err)
	}
	return nil
}
