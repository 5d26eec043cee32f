// Package pki issues the certificates and kubeconfigs of a Kubernetes
// cluster (the lab's, and the API-only integration tier's) with Go's crypto
// only: one ECDSA P-256 CA, ECDSA leaf certificates and an RSA
// service-account signing key.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" // SubjectKeyId (RFC 5280 4.2.1.2): an identifier, not a security use.
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Validity defaults.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultLeafValidity = 365 * 24 * time.Hour
	// backdate covers clock skew between the issuer and the verifier.
	backdate = time.Hour
)

// PEM block types.
const (
	pemCert     = "CERTIFICATE"
	pemECKey    = "EC PRIVATE KEY"
	pemRSAKey   = "RSA PRIVATE KEY"
	pemPKCS8Key = "PRIVATE KEY"
	pemPubKey   = "PUBLIC KEY"
)

// CA is a certificate authority: its certificate and signing key.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// Spec describes one leaf certificate.
type Spec struct {
	// CN is the subject common name (the Kubernetes user name for client certs).
	CN string
	// Orgs are the subject organizations (the Kubernetes groups for client certs).
	Orgs []string
	// DNS and IPs are the subject alternative names (serving certs).
	DNS []string
	IPs []net.IP
	// Client and Server select the extended key usages; at least one is required.
	Client, Server bool
	// Validity is how long the certificate is valid; DefaultLeafValidity when zero.
	Validity time.Duration
}

// NewCA creates a self-signed CA with an ECDSA P-256 key.
func NewCA(cn string) (*CA, error) {
	if cn == "" {
		return nil, errors.New("new CA: empty common name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: generate key: %w", cn, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA %q: %w", cn, err)
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("new CA %q: %w", cn, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(DefaultCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: sign: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: parse: %w", cn, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: %w", cn, err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// Issue signs a new leaf certificate with a fresh ECDSA P-256 key and
// returns both PEM encoded.
func (ca *CA) Issue(s Spec) (certPEM, keyPEM []byte, err error) {
	if s.CN == "" {
		return nil, nil, errors.New("issue certificate: empty CN")
	}
	if !s.Client && !s.Server {
		return nil, nil, fmt.Errorf("issue certificate %q: neither Client nor Server usage", s.CN)
	}
	validity := s.Validity
	if validity == 0 {
		validity = DefaultLeafValidity
	}
	if validity < 0 {
		return nil, nil, fmt.Errorf("issue certificate %q: negative Validity %v", s.CN, validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate %q: generate key: %w", s.CN, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate %q: %w", s.CN, err)
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate %q: %w", s.CN, err)
	}
	var usages []x509.ExtKeyUsage
	if s.Server {
		usages = append(usages, x509.ExtKeyUsageServerAuth)
	}
	if s.Client {
		usages = append(usages, x509.ExtKeyUsageClientAuth)
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.CN, Organization: s.Orgs},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usages,
		BasicConstraintsValid: true,
		DNSNames:              s.DNS,
		IPAddresses:           s.IPs,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate %q: sign: %w", s.CN, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate %q: %w", s.CN, err)
	}
	return encodeCert(der), keyPEM, nil
}

// WriteCA writes the CA's certificate (0644) and key (0600).
func WriteCA(ca *CA, certFile, keyFile string) error {
	if err := writeFile(certFile, ca.CertPEM, 0o644); err != nil {
		return fmt.Errorf("write CA: %w", err)
	}
	if err := writeFile(keyFile, ca.KeyPEM, 0o600); err != nil {
		return fmt.Errorf("write CA: %w", err)
	}
	return nil
}

// LoadCA reads a CA written by WriteCA (or any PEM CA certificate with an
// EC, RSA or PKCS#8 key) and checks that the key matches the certificate.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA %s: not a CA certificate", certFile)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", keyFile, err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("load CA: key %s does not match certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// ParseCert decodes the first PEM certificate in data.
func ParseCert(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != pemCert {
		return nil, errors.New("parse certificate: no PEM CERTIFICATE block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return c, nil
}

// ParseKey decodes a PEM private key (SEC 1 EC, PKCS#1 RSA or PKCS#8).
func ParseKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("parse private key: no PEM block")
	}
	var k any
	var err error
	switch b.Type {
	case pemECKey:
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case pemRSAKey:
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case pemPKCS8Key:
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("parse private key: unexpected PEM block %q", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse private key: %T cannot sign", k)
	}
	return s, nil
}

// newServiceAccountKey returns a PKCS#1 RSA 2048 private key and its PKIX
// public key, both PEM encoded: what kube-apiserver's
// --service-account-signing-key-file/--service-account-key-file and
// kube-controller-manager's --service-account-private-key-file read.
func newServiceAccountKey() (keyPEM, pubPEM []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("service-account key: generate: %w", err)
	}
	pubPEM, err = encodePublicKey(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("service-account key: %w", err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: pemRSAKey, Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return keyPEM, pubPEM, nil
}

func encodePublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPubKey, Bytes: der}), nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: der})
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal EC key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemECKey, Bytes: der}), nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("subject key id: %w", err)
	}
	sum := sha1.Sum(der)
	return sum[:], nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// writeFile writes data atomically (temporary file, then rename) so that a
// process reading the file never sees it half written.
func writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }()
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
