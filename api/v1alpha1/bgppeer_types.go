package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPFamily is an address family a session carries.
// +kubebuilder:validation:Enum=ipv4-unicast;ipv6-unicast
type BGPFamily string

// Families.
const (
	FamilyIPv4Unicast BGPFamily = "ipv4-unicast"
	FamilyIPv6Unicast BGPFamily = "ipv6-unicast"
)

// NextHopMode says which next hop a node puts on the routes it sends.
// +kubebuilder:validation:Enum=Auto;Fixed;FromInterface
type NextHopMode string

// Next-hop modes.
const (
	// NextHopAuto: for the session's own family the session's local
	// address; for the other family a global address of the same
	// interface (never an IPv4-mapped ::ffff: address). The default.
	NextHopAuto NextHopMode = "Auto"
	// NextHopFixed: nextHop.ipv4 and nextHop.ipv6.
	NextHopFixed NextHopMode = "Fixed"
	// NextHopFromInterface: the addresses of nextHop.interface, skipping
	// link-local, deprecated, temporary and dynamic ones.
	NextHopFromInterface NextHopMode = "FromInterface"
)

// BGPPeer is a BGP router that the selected nodes peer with. Cluster-scoped.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=strait;strait-bgp
// +kubebuilder:printcolumn:name="Peer",type=string,JSONPath=".spec.peerIP"
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=".spec.asNumber"
// +kubebuilder:printcolumn:name="Next Hop",type=string,JSONPath=".spec.nextHop.mode"
// +kubebuilder:printcolumn:name="Passive",type=boolean,JSONPath=".spec.passive"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec is one peer.
//
// +kubebuilder:validation:XValidation:rule="!has(self.sourceAddress) || !has(self.sourceInterface)",message="set sourceAddress or sourceInterface, not both",fieldPath=".sourceInterface",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(self.sourceAddress) || !isIP(self.sourceAddress) || !isIP(self.peerIP) || ip(self.sourceAddress).family() == ip(self.peerIP).family()",messageExpression="'sourceAddress ' + self.sourceAddress + ' is not of the family of peerIP ' + self.peerIP",fieldPath=".sourceAddress",reason=FieldValueInvalid
type BGPPeerSpec struct {
	// PeerIP is the peer's address, IPv4 or IPv6.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=39
	// +kubebuilder:validation:XValidation:rule="isIP(self)",messageExpression="self + ' is not an IP address such as 198.51.100.254 or 2001:db8:100::254'",reason=FieldValueInvalid
	// +kubebuilder:validation:XValidation:rule="!isIP(self) || (!ip(self).isLinkLocalUnicast() && !ip(self).isUnspecified() && !ip(self).isLoopback())",messageExpression="self + ' cannot be a peer: link-local, unspecified and loopback addresses are not supported'",reason=FieldValueInvalid
	PeerIP string `json:"peerIP"`

	// Port is the peer's TCP port (default 179).
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`

	// ASNumber is the peer's autonomous system: the node's own for iBGP,
	// another for eBGP.
	//
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	ASNumber int64 `json:"asNumber"`

	// NodeSelector picks the nodes that peer with it; unset or empty: all.
	//
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions: operator must be In, NotIn, Exists or DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="matchExpressions: In and NotIn need values, Exists and DoesNotExist take none"
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// Password for TCP-MD5 (RFC 2385), from a Secret in strait-system.
	//
	// +optional
	Password *SecretKeyRef `json:"password,omitempty"`

	// SourceAddress or SourceInterface is the session's local address (an
	// address of the node of peerIP's family, or that family's address of
	// the interface); overrides the BGPConfiguration's. Unset: the
	// BGPConfiguration's, else the kernel picks.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=39
	// +kubebuilder:validation:XValidation:rule="isIP(self)",messageExpression="self + ' is not an IP address'",reason=FieldValueInvalid
	SourceAddress string `json:"sourceAddress,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[^/\s:]+$`
	SourceInterface string `json:"sourceInterface,omitempty"`

	// Families the session carries. Unset: both when the node is
	// dual-stack, else the node's family (MP-BGP: both families on one
	// session, IPv4 or IPv6).
	//
	// +optional
	// +kubebuilder:validation:MaxItems=2
	// +listType=set
	Families []BGPFamily `json:"families,omitempty"`

	// NextHop of the routes sent to the peer.
	//
	// +optional
	NextHop *NextHop `json:"nextHop,omitempty"`

	// Timers of the session (defaults: keepalive 3s, hold 9s, connect
	// retry 2s).
	//
	// +optional
	Timers *BGPTimers `json:"timers,omitempty"`

	// EBGPMultihop is the TTL of eBGP packets for a peer that is not on a
	// connected network (1..255; unset: 1, directly connected).
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	EBGPMultihop int32 `json:"ebgpMultihop,omitempty"`

	// GracefulRestart overrides the BGPConfiguration's for this peer.
	//
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`

	// BFD detects a dead session in under a second; set to enable.
	//
	// +optional
	BFD *BFD `json:"bfd,omitempty"`

	// Passive nodes wait for the peer to connect.
	//
	// +optional
	Passive bool `json:"passive,omitempty"`
}

// NextHop selects the next hop the node advertises.
//
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'Fixed' || has(self.ipv4) || has(self.ipv6)",message="mode Fixed needs ipv4 or ipv6 (or both)",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'FromInterface' || has(self.interface)",message="mode FromInterface needs interface",fieldPath=".interface",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="(has(self.mode) && self.mode == 'Fixed') || (!has(self.ipv4) && !has(self.ipv6))",message="ipv4 and ipv6 are for mode Fixed only",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="(has(self.mode) && self.mode == 'FromInterface') || !has(self.interface)",message="interface is for mode FromInterface only",fieldPath=".interface",reason=FieldValueForbidden
type NextHop struct {
	// Mode: Auto (default), Fixed or FromInterface.
	//
	// +optional
	Mode NextHopMode `json:"mode,omitempty"`
	// IPv4 and IPv6 next hops for mode Fixed (global addresses; a family
	// without one uses Auto's choice).
	//
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",messageExpression="self + ' is not an IPv4 address'",reason=FieldValueInvalid
	IPv4 string `json:"ipv4,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=39
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 6 && !self.lowerAscii().startsWith('::ffff:')",messageExpression="self + ' is not an IPv6 address (IPv4-mapped ::ffff: addresses are not next hops routers install)'",reason=FieldValueInvalid
	// +kubebuilder:validation:XValidation:rule="!isIP(self) || !ip(self).isLinkLocalUnicast()",messageExpression="self + ' is link-local: a next hop must be global'",reason=FieldValueInvalid
	IPv6 string `json:"ipv6,omitempty"`
	// Interface to read the next hops from, for mode FromInterface.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[^/\s:]+$`
	Interface string `json:"interface,omitempty"`
}

// BGPTimers are a session's timers.
//
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveTime) || !has(self.holdTime) || !self.keepaliveTime.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || !self.holdTime.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || duration(self.keepaliveTime) < duration(self.holdTime)",message="keepaliveTime must be shorter than holdTime",fieldPath=".keepaliveTime",reason=FieldValueInvalid
type BGPTimers struct {
	// KeepaliveTime between keepalives (default 3s).
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+([.][0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('21845s'))",message="must be between 1s and 21845s",reason=FieldValueInvalid
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`
	// HoldTime after which a silent session is dropped (default 9s; 3s..65535s).
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+([.][0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || (duration(self) >= duration('3s') && duration(self) <= duration('65535s'))",message="must be between 3s and 65535s",reason=FieldValueInvalid
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`
	// ConnectRetryTime between connection attempts (default 2s).
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+([.][0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('3600s'))",message="must be between 1s and 3600s",reason=FieldValueInvalid
	ConnectRetryTime *metav1.Duration `json:"connectRetryTime,omitempty"`
}

// BFD configures Bidirectional Forwarding Detection on a session.
type BFD struct {
	// MinTx and MinRx intervals (default 300ms; 10ms..60s).
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+([.][0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || (duration(self) >= duration('10ms') && duration(self) <= duration('60s'))",message="must be between 10ms and 60s",reason=FieldValueInvalid
	MinTx *metav1.Duration `json:"minTx,omitempty"`
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+([.][0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || (duration(self) >= duration('10ms') && duration(self) <= duration('60s'))",message="must be between 10ms and 60s",reason=FieldValueInvalid
	MinRx *metav1.Duration `json:"minRx,omitempty"`
	// Multiplier: missed packets before the session is down (default 3).
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	Multiplier int32 `json:"multiplier,omitempty"`
}

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}

// BGPNodeStatus is what one node's agent reports about its BGP sessions,
// named after the node. Cluster-scoped; written by the agent.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=strait;strait-bgp
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Router ID",type=string,JSONPath=".status.routerID"
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=".status.asNumber"
// +kubebuilder:printcolumn:name="Peers",type=integer,JSONPath=".status.peerCount"
// +kubebuilder:printcolumn:name="Established",type=integer,JSONPath=".status.establishedCount"
// +kubebuilder:printcolumn:name="Advertised",type=integer,JSONPath=".status.advertised"
// +kubebuilder:printcolumn:name="Updated",type=date,JSONPath=".status.lastUpdated"
type BGPNodeStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Status BGPNodeStatusStatus `json:"status,omitempty"`
}

// BGPNodeStatusStatus is a node's BGP state.
type BGPNodeStatusStatus struct {
	// RouterID and ASNumber the node's speaker runs with.
	//
	// +optional
	RouterID string `json:"routerID,omitempty"`
	// +optional
	ASNumber int64 `json:"asNumber,omitempty"`
	// PeerCount and EstablishedCount: sessions configured and up.
	//
	// +optional
	PeerCount int32 `json:"peerCount,omitempty"`
	// +optional
	EstablishedCount int32 `json:"establishedCount,omitempty"`
	// Advertised is how many prefixes the node originates.
	//
	// +optional
	Advertised int32 `json:"advertised,omitempty"`
	// Peers, one per session.
	//
	// +optional
	// +listType=map
	// +listMapKey=peerIP
	Peers []BGPPeerState `json:"peers,omitempty"`
	// Problems with the configuration for this node, in words: what is not
	// advertised or not peered with, and why.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Problems []string `json:"problems,omitempty"`
	// LastUpdated is when the agent last wrote this status.
	//
	// +optional
	LastUpdated metav1.Time `json:"lastUpdated,omitempty"`
	// Conditions: Ready (the speaker runs and every session is up).
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// BGPPeerState is one session's state.
type BGPPeerState struct {
	// PeerIP of the session.
	PeerIP string `json:"peerIP"`
	// Source: the BGPPeer's name, or "mesh" for a node-to-node session.
	//
	// +optional
	Source string `json:"source,omitempty"`
	// Node at the other end of a mesh session.
	//
	// +optional
	Node string `json:"node,omitempty"`
	// ASNumber of the peer.
	//
	// +optional
	ASNumber int64 `json:"asNumber,omitempty"`
	// State: Idle, Connect, Active, OpenSent, OpenConfirm or Established.
	//
	// +optional
	State string `json:"state,omitempty"`
	// Since is when the session entered its state (uptime when
	// Established).
	//
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// PrefixesSent and PrefixesReceived, over all families.
	//
	// +optional
	PrefixesSent int64 `json:"prefixesSent,omitempty"`
	// +optional
	PrefixesReceived int64 `json:"prefixesReceived,omitempty"`
	// Families negotiated.
	//
	// +optional
	Families []string `json:"families,omitempty"`
	// LastError: why the session last went down, or is not up, as far as
	// it is known (a wrong TCP-MD5 password is silent on the wire).
	//
	// +optional
	LastError string `json:"lastError,omitempty"`
}

// BGPNodeStatusList is a list of BGPNodeStatuses.
//
// +kubebuilder:object:root=true
type BGPNodeStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPNodeStatus `json:"items"`
}
