package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// pollInterval is how often WaitReady asks.
const pollInterval = 100 * time.Millisecond

// WaitReady polls c.ReadyURL until it answers 200 or ctx ends. https
// endpoints are verified against caPEM (every serving certificate comes
// from the cluster CA) and get the client certificate, which the
// apiserver's /readyz needs; plain http (etcd) uses neither. An empty
// ReadyURL is ready at once.
func WaitReady(ctx context.Context, c Command, caPEM, clientCert, clientKey []byte) error {
	if c.ReadyURL == "" {
		return nil
	}
	client, err := readyClient(c.ReadyURL, caPEM, clientCert, clientKey)
	if err != nil {
		return fmt.Errorf("wait for %s: %w", c.Name, err)
	}
	defer client.CloseIdleConnections()
	for {
		last := probe(ctx, client, c.ReadyURL)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s at %s: %w (last: %w)", c.Name, c.ReadyURL, ctx.Err(), last)
		case <-time.After(pollInterval):
		}
	}
}

func readyClient(rawURL string, caPEM, clientCert, clientKey []byte) (*http.Client, error) {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if strings.HasPrefix(rawURL, "https://") {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("no CA certificate in caPEM")
		}
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if len(clientCert) > 0 {
			pair, err := tls.X509KeyPair(clientCert, clientKey)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		tr.TLSClientConfig = cfg
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}, nil
}

func probe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}
