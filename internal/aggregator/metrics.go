package aggregator

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the aggregator's Prometheus metrics, on their own registry.
type metrics struct {
	reg         *prometheus.Registry
	received    *prometheus.CounterVec // records, per exporter
	messages    *prometheus.CounterVec // messages, per exporter
	malformed   *prometheus.CounterVec // malformed messages, per exporter
	unknownSets *prometheus.CounterVec // data sets without a known template, per exporter
	refused     *prometheus.CounterVec // records dropped: no output template id free, per exporter
	exported    *prometheus.CounterVec // records, per destination
	dropped     *prometheus.CounterVec // records, per destination and reason
	connections *prometheus.GaugeVec   // open exporter sessions, per transport
	destUp      *prometheus.GaugeVec   // 1 when a destination is connected
	templates   prometheus.GaugeFunc
	active      prometheus.GaugeFunc
}

func newMetrics(templates, active func() float64) *metrics {
	const ns = "strait_aggregator"
	m := &metrics{
		reg: prometheus.NewRegistry(),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "records_received_total",
			Help: "Data records decoded, per exporter address."}, []string{"exporter"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "messages_received_total",
			Help: "IPFIX messages received, per exporter address."}, []string{"exporter"}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "messages_malformed_total",
			Help: "Malformed IPFIX messages dropped (the rest of the message after the bad set), per exporter."}, []string{"exporter"}),
		unknownSets: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sets_unknown_template_total",
			Help: "Data sets skipped because their template is unknown or expired, per exporter."}, []string{"exporter"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "records_refused_total",
			Help: "Records the pipeline refused, per exporter: no free output template id (proxy mode), bad addresses or a full table (aggregate mode)."}, []string{"exporter"}),
		exported: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "records_exported_total",
			Help: "Records written to a destination."}, []string{"destination"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "records_dropped_total",
			Help: "Records a destination dropped, by reason."}, []string{"destination", "reason"}),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "exporter_sessions",
			Help: "Open exporter sessions (TCP/TLS connections, UDP sources seen within the template timeout)."}, []string{"transport"}),
		destUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "destination_up",
			Help: "1 when the destination is connected or open."}, []string{"destination"}),
	}
	m.templates = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "templates",
		Help: "Templates held for all exporter sessions."}, templates)
	m.active = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "active_connections",
		Help: "Connections held by aggregate mode's correlation table."}, active)
	m.reg.MustRegister(m.received, m.messages, m.malformed, m.unknownSets, m.refused, m.exported, m.dropped,
		m.connections, m.destUp, m.templates, m.active,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// exporterMetrics are one exporter's counters, resolved once per session.
type exporterMetrics struct {
	received, messages, malformed, unknownSets, refused prometheus.Counter
}

func (m *metrics) forExporter(addr string) exporterMetrics {
	return exporterMetrics{
		received:    m.received.WithLabelValues(addr),
		messages:    m.messages.WithLabelValues(addr),
		malformed:   m.malformed.WithLabelValues(addr),
		unknownSets: m.unknownSets.WithLabelValues(addr),
		refused:     m.refused.WithLabelValues(addr),
	}
}
