package pki

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// Kubeconfig renders a kubeconfig (clientcmd v1 YAML) with one cluster, one
// user authenticating with a client certificate and one current context
// joining them; the certificates and key are embedded (*-data fields).
func Kubeconfig(server string, caPEM, certPEM, keyPEM []byte, user, cluster string) []byte {
	b64 := base64.StdEncoding.EncodeToString
	ctx := user + "@" + cluster
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    certificate-authority-data: %[3]s
users:
- name: %[4]s
  user:
    client-certificate-data: %[5]s
    client-key-data: %[6]s
contexts:
- name: %[7]s
  context:
    cluster: %[1]s
    user: %[4]s
current-context: %[7]s
preferences: {}
`, quote(cluster), quote(server), b64(caPEM), quote(user), b64(certPEM), b64(keyPEM), quote(ctx))
}

// quote renders s as a YAML double-quoted scalar: a JSON string is one, with
// every special character escaped.
func quote(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}
