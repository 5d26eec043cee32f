package aggregator

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

func certPool(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA %s: %w", caFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA %s: no PEM certificate", caFile)
	}
	return pool, nil
}

// serverTLS is the collector's TLS config: mutual authentication against CAFile.
func serverTLS(t *TLSListener) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("collector.tls: load key pair: %w", err)
	}
	pool, err := certPool(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("collector.tls.caFile: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}

// clientTLS is an IPFIX destination's TLS config: client certificate, collector verified against CAFile.
func clientTLS(f *TLSClientFiles, serverName string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load key pair: %w", err)
	}
	pool, err := certPool(f.CAFile)
	if err != nil {
		return nil, err
	}
	if f.ServerName != "" {
		serverName = f.ServerName
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: serverName,
		MinVersion: tls.VersionTLS12}, nil
}
