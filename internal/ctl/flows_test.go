package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	aggapi "github.com/strait-net/strait/internal/aggregator/api"
)

func fixtureFlows(mode string) aggapi.FlowsResponse {
	return aggapi.FlowsResponse{Mode: mode, Total: 3, Flows: []aggapi.Flow{
		{SourceIP: "10.244.0.5", DestinationIP: "10.244.1.7", SourcePort: 40000, DestinationPort: 5432, Protocol: 6,
			SourcePod: "web-1", SourceNamespace: "shop", SourceNode: "n1", DestinationPod: "db-0", DestinationNamespace: "data",
			DestinationNode: "n2", DestinationService: "data/db:pg", FlowType: "inter-node",
			Start: time.Date(2026, 1, 2, 5, 0, 0, 0, time.UTC), End: time.Date(2026, 1, 2, 5, 0, 9, 0, time.UTC),
			Packets: 10, Bytes: 1000, ReversePackets: 8, ReverseBytes: 4000, Throughput: 888, Correlated: true},
		{SourceIP: "fd10:244::5", DestinationIP: "2001:db8:100::9", SourcePort: 50000, DestinationPort: 53, Protocol: 17,
			SourcePod: "web-1", SourceNamespace: "shop", FlowType: "to-external", Packets: 1, Bytes: 60},
	}}
}

// flowsServer answers the flows API and records the query it got.
func flowsServer(mode string, query *string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+aggapi.FlowsPath, func(w http.ResponseWriter, r *http.Request) {
		*query = r.URL.RawQuery
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(fixtureFlows(mode))
	})
	return mux
}

func runArgs(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stderr bytes.Buffer
	o, err := ParseArgs(args, &stderr)
	if err != nil {
		return stderr.String(), err
	}
	o.Now = testNow
	var out bytes.Buffer
	err = Run(context.Background(), o, &out)
	return out.String(), err
}

func TestFlows(t *testing.T) {
	var agentQuery, aggQuery string
	sock := serveUnix(t, flowsServer("agent", &agentQuery))
	agg := httptest.NewServer(flowsServer("aggregate", &aggQuery))
	defer agg.Close()

	out, err := runArgs(t, "--socket", sock, "flows", "--pod", "data/db-0", "--top", "5")
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "agent table", out, `SOURCE POD  DESTINATION POD  SOURCE               DESTINATION           PROTO  TYPE         PACKETS  BYTES  REV PACKETS  REV BYTES
shop/web-1  data/db-0        10.244.0.5:40000     10.244.1.7:5432       TCP    inter-node   10       1000   8            4000
shop/web-1  -                [fd10:244::5]:50000  [2001:db8:100::9]:53  UDP    to-external  1        60     0            0
2 of 3 flows (agent)
`)
	if agentQuery != "pod=data%2Fdb-0&top=5" {
		t.Errorf("agent query %q", agentQuery)
	}

	out, err = runArgs(t, "--socket", "/nonexistent", "flows", "--aggregator", agg.URL, "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"data/db:pg", "888", "05:00:09", "(aggregate)", "SRC NODE"} {
		if !strings.Contains(out, want) {
			t.Errorf("wide aggregator output lacks %q:\n%s", want, out)
		}
	}
	if aggQuery != "" {
		t.Errorf("aggregator query %q, want none", aggQuery)
	}

	out, err = runArgs(t, "--socket", sock, "flows", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var back aggapi.FlowsResponse
	if err := json.Unmarshal([]byte(out), &back); err != nil || len(back.Flows) != 2 || back.Flows[0].DestinationService != "data/db:pg" {
		t.Errorf("json round trip: %v %+v", err, back)
	}

	for _, bad := range [][]string{
		{"flows", "--pod", "db-0"}, {"flows", "--pod", "a/b/c"}, {"flows", "--top", "-1"},
		{"flows", "--aggregator", "aggregator:8080"}, {"flows", "extra"},
	} {
		if _, err := runArgs(t, bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":"not ready"}`)
	}))
	defer down.Close()
	if _, err := runArgs(t, "flows", "--aggregator", down.URL); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("aggregator error: %v", err)
	}
}
