package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LoadBalancer Services: Strait's class, and the annotation asking for
// fixed addresses.
const (
	// LoadBalancerClass is Strait's spec.loadBalancerClass. A Service with
	// no class is Strait's too; one naming another class is left alone.
	LoadBalancerClass = "strait.dev/lb"
	// AnnotationLoadBalancerIPs asks for fixed ingress addresses, one per
	// family, comma-separated: "198.18.0.10,2001:db8:18::10". It wins over
	// the deprecated spec.loadBalancerIP.
	AnnotationLoadBalancerIPs = "strait.dev/loadBalancerIPs"
	// AnnotationLoadBalancerIPPool restricts a Service to the named pools
	// (comma-separated).
	AnnotationLoadBalancerIPPool = "strait.dev/loadBalancerIPPool"
)

// LoadBalancerIPPool is a range of addresses the allocator hands to
// Services of type LoadBalancer. Cluster-scoped.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=strait,shortName=lbpool
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="CIDRs",type=string,JSONPath=".spec.cidrs"
// +kubebuilder:printcolumn:name="Auto",type=boolean,JSONPath=".spec.autoAssign"
// +kubebuilder:printcolumn:name="IPv4 Used",type=integer,JSONPath=".status.allocatedIPv4"
// +kubebuilder:printcolumn:name="IPv6 Used",type=integer,JSONPath=".status.allocatedIPv6"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type LoadBalancerIPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec LoadBalancerIPPoolSpec `json:"spec"`
	// +optional
	Status LoadBalancerIPPoolStatus `json:"status,omitempty"`
}

// LoadBalancerIPPoolSpec is the desired state of a LoadBalancerIPPool.
type LoadBalancerIPPoolSpec struct {
	// CIDRs of the pool, IPv4 and/or IPv6, with no host bits set. Every
	// address is used (a /32 or /128 is advertised per Service).
	//
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",messageExpression="self + ' is not a CIDR such as 198.18.0.0/24 or 2001:db8:18::/120'",reason=FieldValueInvalid
	// +kubebuilder:validation:items:XValidation:rule="!isCIDR(self) || cidr(self).masked() == cidr(self)",messageExpression="'host bits set in ' + self + ': the address must be the network address'",reason=FieldValueInvalid
	CIDRs []string `json:"cidrs"`

	// ServiceSelector picks the Services that may get addresses from the
	// pool; unset: all.
	//
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions: operator must be In, NotIn, Exists or DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="matchExpressions: In and NotIn need values, Exists and DoesNotExist take none"
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`

	// AutoAssign: addresses are handed to any selected Service (default
	// true); false: only to Services that ask for this pool
	// (strait.dev/loadBalancerIPPool) or for an address in it.
	//
	// +optional
	// +kubebuilder:default=true
	AutoAssign *bool `json:"autoAssign,omitempty"`
}

// LoadBalancerIPPoolStatus is reported by the allocator.
type LoadBalancerIPPoolStatus struct {
	// AllocatedIPv4 and AllocatedIPv6: addresses in use.
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	AllocatedIPv4 int64 `json:"allocatedIPv4,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=0
	AllocatedIPv6 int64 `json:"allocatedIPv6,omitempty"`
	// AvailableIPv4 and AvailableIPv6: addresses free (at most
	// 9223372036854775807).
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	AvailableIPv4 int64 `json:"availableIPv4,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=0
	AvailableIPv6 int64 `json:"availableIPv6,omitempty"`
	// Conditions: Ready (the pool's CIDRs are usable and do not overlap
	// another pool), Exhausted.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// AutoAssignEnabled is spec.autoAssign, true when unset.
func (s *LoadBalancerIPPoolSpec) AutoAssignEnabled() bool {
	return s.AutoAssign == nil || *s.AutoAssign
}

// LoadBalancerIPPoolList is a list of LoadBalancerIPPools.
//
// +kubebuilder:object:root=true
type LoadBalancerIPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LoadBalancerIPPool `json:"items"`
}
