// Package flowbench benchmarks the Flow Aggregator's proxy path against a proxy loop built on
// github.com/vmware/go-ipfix v0.17.0, in the same run. It is its own Go module so that go-ipfix (and the
// newer Kubernetes libraries it requires) stay out of Strait's module graph. Run it with `make bench-flows`.
package flowbench
