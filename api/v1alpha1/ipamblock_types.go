package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPAMBlock is one block of an IPPool, claimed by one node. Its name is
// BlockName(cidr), so there is at most one object per block: creating it is
// the claim (of two agents racing for a block, one gets AlreadyExists) and
// deleting it the release. Cluster-scoped; the spec is immutable.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=strait
// +kubebuilder:subresource:status
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.spec.cidr) || !(cidr(self.spec.cidr).masked() == cidr(self.spec.cidr)) || self.metadata.name == (self.spec.cidr.startsWith('::') ? '0' + self.spec.cidr : self.spec.cidr).replace('::/', '::0/').replace('.', '-').replace(':', '-').replace('/', '-')",messageExpression="'metadata.name must be ' + (self.spec.cidr.startsWith('::') ? '0' + self.spec.cidr : self.spec.cidr).replace('::/', '::0/').replace('.', '-').replace(':', '-').replace('/', '-') + ', the name of block ' + self.spec.cidr + ' (v1alpha1.BlockName)'",reason=FieldValueInvalid
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=".spec.cidr"
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=".spec.pool"
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=".spec.node"
// +kubebuilder:printcolumn:name="Allocations",type=integer,JSONPath=".status.allocations"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type IPAMBlock struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec IPAMBlockSpec `json:"spec"`
	// +optional
	Status IPAMBlockStatus `json:"status,omitempty"`
}

// IPAMBlockSpec says which node owns which block of which pool.
type IPAMBlockSpec struct {
	// CIDR of the block, as netip.Prefix.String writes it (lower case,
	// shortest IPv6 form) and with no host bits set. Immutable.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",messageExpression="self + ' is not a CIDR such as 10.244.1.0/26 or fd42:244::/122'",reason=FieldValueInvalid
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).masked() == cidr(self)",messageExpression="'host bits set in ' + self + ': the address must be the network address'",reason=FieldValueInvalid
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || string(cidr(self)) == self",messageExpression="self + ' is not in canonical form (lower case, shortest IPv6 spelling: as Go netip.Prefix.String writes it)'",reason=FieldValueInvalid
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="cidr is immutable",reason=FieldValueForbidden
	CIDR string `json:"cidr"`

	// Pool is the name of the IPPool the block belongs to. Immutable.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="pool is immutable",reason=FieldValueForbidden
	Pool string `json:"pool"`

	// Node is the name of the node that owns the block: only its agent
	// allocates addresses from it. Immutable: ownership moves only by
	// deleting the block and claiming it again.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="node is immutable: delete the block and claim it again",reason=FieldValueForbidden
	Node string `json:"node"`
}

// IPAMBlockStatus is reported by the owning node's agent.
type IPAMBlockStatus struct {
	// Allocations is how many addresses of the block are in use.
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	Allocations int32 `json:"allocations,omitempty"`

	// Conditions of the block.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// IPAMBlockList is a list of IPAMBlocks.
//
// +kubebuilder:object:root=true
type IPAMBlockList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAMBlock `json:"items"`
}
