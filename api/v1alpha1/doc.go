// Package v1alpha1 is Strait's configuration API, group strait.dev, version
// v1alpha1: IPPools (the address ranges pods get addresses from) and
// IPAMBlocks (one per block a node claimed from a pool), plus the Node
// annotations through which agents publish their VXLAN endpoints; BGP
// (BGPConfiguration, BGPPeer, and BGPNodeStatus which agents write) and
// LoadBalancerIPPools, from which Services of type LoadBalancer get addresses.
//
// The types are the source of the CRDs in deploy/crds: after changing them
// run `go run ./hack/crdgen` from the repository root, which regenerates the
// CRDs, deploy/strait.yaml and zz_generated.deepcopy.go (test/manifests
// fails while they are out of date).
//
// The CRDs' validation rules use the Kubernetes CEL IP and CIDR libraries,
// so they need a Kubernetes 1.31 or newer API server.
//
// This package depends on the standard library and k8s.io/apimachinery only.
//
// +kubebuilder:object:generate=true
// +groupName=strait.dev
package v1alpha1
