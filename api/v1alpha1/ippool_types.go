package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Encapsulation is how pod traffic between nodes is carried.
// +kubebuilder:validation:Enum=VXLAN;VXLANCrossSubnet;None
type Encapsulation string

// Encapsulations.
const (
	// EncapsulationVXLAN always encapsulates traffic to other nodes.
	EncapsulationVXLAN Encapsulation = "VXLAN"
	// EncapsulationVXLANCrossSubnet routes natively to nodes in the same
	// underlay subnet (strait.dev/node-subnet-v4|v6) and encapsulates
	// across subnets. The default.
	EncapsulationVXLANCrossSubnet Encapsulation = "VXLANCrossSubnet"
	// EncapsulationNone routes natively within the subnet and leaves other
	// nodes to the underlay (BGP).
	EncapsulationNone Encapsulation = "None"
)

// Encapsulations lists the valid Encapsulation values.
func Encapsulations() []Encapsulation {
	return []Encapsulation{EncapsulationVXLAN, EncapsulationVXLANCrossSubnet, EncapsulationNone}
}

// Block size limits and defaults, per family.
const (
	MinBlockSizeV4     = 20
	MaxBlockSizeV4     = 32
	DefaultBlockSizeV4 = 26
	MinBlockSizeV6     = 116
	MaxBlockSizeV6     = 128
	DefaultBlockSizeV6 = 122
)

// ConditionReady is the condition type reporting that an object is in use
// as its spec asks.
const ConditionReady = "Ready"

// IPPool is a range of pod addresses, handed to nodes in blocks of
// blockSize (IPAMBlocks). Cluster-scoped.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=strait
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=".spec.cidr"
// +kubebuilder:printcolumn:name="Block Size",type=integer,JSONPath=".spec.blockSize",description="empty: 26 for IPv4, 122 for IPv6"
// +kubebuilder:printcolumn:name="Encapsulation",type=string,JSONPath=".spec.encapsulation"
// +kubebuilder:printcolumn:name="NAT",type=boolean,JSONPath=".spec.natOutgoing"
// +kubebuilder:printcolumn:name="Disabled",type=boolean,JSONPath=".spec.disabled"
// +kubebuilder:printcolumn:name="Blocks",type=integer,JSONPath=".status.allocatedBlocks",description="blocks claimed by nodes"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec IPPoolSpec `json:"spec"`
	// +optional
	Status IPPoolStatus `json:"status,omitempty"`
}

// IPPoolSpec is the desired state of an IPPool.
//
// +kubebuilder:validation:XValidation:rule="!has(self.blockSize) || !isCIDR(self.cidr) || (cidr(self.cidr).ip().family() == 4 ? self.blockSize <= 32 : self.blockSize >= 116)",messageExpression="'blockSize is out of range for cidr ' + self.cidr + ' (IPv4: 20..32, IPv6: 116..128)'",fieldPath=".blockSize",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="!has(self.blockSize) || !isCIDR(self.cidr) || self.blockSize >= cidr(self.cidr).prefixLength()",messageExpression="'blockSize is smaller than the prefix length of cidr ' + self.cidr + ': a block cannot be larger than its pool'",fieldPath=".blockSize",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="(has(self.blockSize) ? self.blockSize : (self.cidr.contains(':') ? 122 : 26)) == (has(oldSelf.blockSize) ? oldSelf.blockSize : (oldSelf.cidr.contains(':') ? 122 : 26))",message="blockSize is immutable: blocks of the old size may exist",fieldPath=".blockSize",reason=FieldValueForbidden
type IPPoolSpec struct {
	// CIDR is the pool's address range, IPv4 (10.244.0.0/16) or IPv6
	// (fd42:244::/56), with no host bits set. Immutable.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",messageExpression="self + ' is not a CIDR such as 10.244.0.0/16 or fd42:244::/56'",reason=FieldValueInvalid
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).masked() == cidr(self)",messageExpression="'host bits set in ' + self + ': the address must be the network address'",reason=FieldValueInvalid
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="cidr is immutable",reason=FieldValueForbidden
	CIDR string `json:"cidr"`

	// BlockSize is the prefix length of the blocks nodes claim from the
	// pool: 20..32 for IPv4, 116..128 for IPv6, and not below the cidr's
	// prefix length. Unset means 26 for IPv4 (64 addresses) and 122 for
	// IPv6; the API server cannot default it (the default depends on the
	// cidr's family), SetDefaults_IPPool does. Immutable.
	//
	// +optional
	// +kubebuilder:validation:Minimum=20
	// +kubebuilder:validation:Maximum=128
	BlockSize int32 `json:"blockSize,omitempty"`

	// Encapsulation of traffic to other nodes: VXLAN, VXLANCrossSubnet
	// (native within the underlay subnet, VXLAN across subnets) or None.
	//
	// +optional
	// +kubebuilder:default=VXLANCrossSubnet
	Encapsulation Encapsulation `json:"encapsulation,omitempty"`

	// NATOutgoing masquerades traffic from the pool's pods to destinations
	// outside all pools. Default true. A pointer so that an explicit false
	// survives a Go client's omitempty.
	//
	// +optional
	// +kubebuilder:default=true
	NATOutgoing *bool `json:"natOutgoing,omitempty"`

	// NodeSelector picks the nodes that may claim blocks from the pool; nil
	// selects all nodes, an empty selector too.
	//
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions: operator must be In, NotIn, Exists or DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="matchExpressions: In and NotIn need values, Exists and DoesNotExist take none"
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// Disabled pools hand out no new blocks; blocks already claimed stay.
	//
	// +optional
	Disabled bool `json:"disabled,omitempty"`
}

// IPPoolStatus is the observed state of an IPPool.
type IPPoolStatus struct {
	// Conditions of the pool.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// Blocks is how many blocks the pool holds (BlockCount), at most
	// 2147483647.
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	Blocks int32 `json:"blocks,omitempty"`

	// AllocatedBlocks is how many blocks nodes have claimed (IPAMBlocks of
	// the pool).
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	AllocatedBlocks int32 `json:"allocatedBlocks,omitempty"`
}

// IPPoolList is a list of IPPools.
//
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}
