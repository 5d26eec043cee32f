package aggregator

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/aggregator/api"
	"github.com/strait-net/strait/internal/flow/ipfix"
	"github.com/strait-net/strait/internal/testutil"
)

// TestAggregateModeCorrelates: the source node and the destination node each report their side of one
// connection; the aggregator exports one record with both pods and both nodes' counters, and lists it in the
// flows API meanwhile.
func TestAggregateModeCorrelates(t *testing.T) {
	col := newTestCollector(t, "tcp", nil)
	a := startAggregator(t, fmt.Sprintf(`
mode: aggregate
activeFlowRecordTimeout: 1s
inactiveFlowRecordTimeout: 2s
collector: {tcp: {address: "127.0.0.1:0"}}
destinations: [{name: c, type: ipfix, address: %q}]
api: {address: "127.0.0.1:0"}
`, col.addr), Options{})
	st := func(id, l uint16) ipfix.FieldSpec { return ipfix.FieldSpec{ID: id, Length: l, PEN: ipfix.StraitPEN} }
	ie := func(id, l uint16) ipfix.FieldSpec { return ipfix.FieldSpec{ID: id, Length: l} }
	rev := func(id, l uint16) ipfix.FieldSpec { return ipfix.FieldSpec{ID: id, Length: l, PEN: ipfix.ReversePEN} }
	tm, err := ipfix.NewTemplate(256, 0, ie(8, 4), ie(12, 4), ie(7, 2), ie(11, 2), ie(4, 1), ie(152, 8), ie(153, 8),
		ie(85, 8), ie(86, 8), rev(85, 8), rev(86, 8), ie(61, 1), ie(136, 1), st(ipfix.IEFlowType, 1),
		st(ipfix.IESourcePodName, ipfix.VarLen), st(ipfix.IESourcePodNamespace, ipfix.VarLen), st(ipfix.IESourceNodeName, ipfix.VarLen),
		st(ipfix.IEDestinationPodName, ipfix.VarLen), st(ipfix.IEDestinationPodNamespace, ipfix.VarLen), st(ipfix.IEDestinationNodeName, ipfix.VarLen))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-3 * time.Second).Truncate(time.Millisecond)
	send := func(domain uint32, direction uint8, bytes uint64, pods [6]string) {
		conn, err := net.Dial("tcp", a.Addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		enc := ipfix.NewEncoder(conn, 0)
		if err := enc.AddTemplate(domain, tm); err != nil {
			t.Fatal(err)
		}
		var rb ipfix.RecordBuilder
		rb.IPv4(netip.MustParseAddr("10.244.1.5"))
		rb.IPv4(netip.MustParseAddr("10.244.2.7"))
		rb.Uint16(40000)
		rb.Uint16(8080)
		rb.Uint8(6)
		rb.Milliseconds(start)
		rb.Milliseconds(start.Add(time.Second))
		rb.Uint64(bytes)
		rb.Uint64(10)
		rb.Uint64(2 * bytes)
		rb.Uint64(8)
		rb.Uint8(direction)
		rb.Uint8(3) // end of flow
		rb.Uint8(ipfix.FlowTypeInterNode)
		for _, s := range pods {
			rb.String(s)
		}
		if err := enc.AppendRecord(domain, 256, rb.Bytes()); err != nil {
			t.Fatal(err)
		}
		if err := enc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	send(1, 1, 1000, [6]string{"client", "default", "n1", "", "", ""}) // source node: egress
	send(2, 0, 1000, [6]string{"", "", "", "server", "web", "n2"})     // destination node: ingress
	client := &http.Client{Timeout: 5 * time.Second}
	var fr api.FlowsResponse
	eventually(t, 5*time.Second, func() error {
		var err error
		if fr, err = getFlows(client, a.Addr("api"), "?pod=web/server"); err != nil {
			return err
		}
		if len(fr.Flows) != 1 {
			return fmt.Errorf("%d flows", len(fr.Flows))
		}
		return nil
	})
	if f := fr.Flows[0]; fr.Mode != "aggregate" || f.SourcePod != "client" || f.DestinationPod != "server" ||
		f.Bytes != 1000 || f.ReverseBytes != 2000 || !f.Correlated {
		t.Fatalf("API flow %+v", fr)
	}
	col.waitCount(t, 1, 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	recs := col.snapshot()
	if len(recs) != 1 {
		t.Fatalf("%d exported records, want 1 correlated: %v", len(recs), recs)
	}
	r := recs[0]
	for k, want := range map[string]any{
		"sourcePodName": "client", "sourcePodNamespace": "default", "sourceNodeName": "n1",
		"destinationPodName": "server", "destinationPodNamespace": "web", "destinationNodeName": "n2",
		"octetTotalCount": uint64(1000), "reverseOctetTotalCount": uint64(2000), "packetTotalCount": uint64(10),
		"octetTotalCountFromSourceNode": uint64(1000), "octetTotalCountFromDestinationNode": uint64(1000),
		"sourceIPv4Address": "10.244.1.5", "destinationTransportPort": uint64(8080), "flowType": uint64(2),
	} {
		if r[k] != want {
			t.Errorf("%s = %v (%T), want %v", k, r[k], r[k], want)
		}
	}
}

// TestTLSMutualAuth: an exporter with a certificate signed by the CA is accepted and its records reach a
// collector over a TLS destination; one without a certificate is refused.
func TestTLSMutualAuth(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", ca.PEM)
	srv := ca.Issue("server", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	cli := ca.Issue("client", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	srvCert, srvKey := write("server.pem", srv.CertPEM), write("server-key.pem", srv.KeyPEM)
	cliCert, cliKey := write("client.pem", cli.CertPEM), write("client-key.pem", cli.KeyPEM)

	// The downstream collector speaks TLS too.
	srvPair, pool := srv.TLS, ca.Pool()
	col := newTestCollector(t, "tcp", nil)
	col.close() // replaced by a TLS listener below
	tln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srvPair},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	col.closers = []io.Closer{tln}
	go func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			go col.serveConn(c)
		}
	}()
	a := startAggregator(t, fmt.Sprintf(`
collector:
  tls: {address: "127.0.0.1:0", certFile: %q, keyFile: %q, caFile: %q}
destinations:
  - {name: c, type: ipfix, transport: tls, address: %q, tls: {certFile: %q, keyFile: %q, caFile: %q, serverName: localhost}}
api: {address: "127.0.0.1:0"}
`, srvCert, srvKey, caFile, tln.Addr().String(), cliCert, cliKey, caFile), Options{})

	cliPair := cli.TLS
	e := newTestExporter(t, "tcp", a.Addr("tls"), 9)
	e.dial = func(network, addr string) (net.Conn, error) {
		return tls.Dial(network, addr, &tls.Config{Certificates: []tls.Certificate{cliPair}, RootCAs: pool, ServerName: "localhost"})
	}
	if err := e.connect(); err != nil {
		t.Fatal(err)
	}
	if err := e.send(0, 20); err != nil {
		t.Fatal(err)
	}
	col.waitCount(t, 20, 10*time.Second)

	// Without a client certificate the handshake fails and nothing is decoded.
	anon, err := tls.Dial("tcp", a.Addr("tls"), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err == nil {
		_, _ = anon.Write(make([]byte, 16))
		one := make([]byte, 1)
		_ = anon.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err = anon.Read(one); err == nil {
			t.Fatal("TLS session without a client certificate stayed open")
		}
		anon.Close()
	}
	client := &http.Client{Timeout: 5 * time.Second}
	if got := metric(t, client, a.Addr("api"), "strait_aggregator_records_received_total"); got != 20 {
		t.Fatalf("received %v records, want 20", got)
	}
}
