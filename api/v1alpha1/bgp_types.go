package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPConfigurationDefault is the name of the cluster-wide BGPConfiguration;
// a node's override is named BGPConfigurationNodePrefix + the node's name.
const (
	BGPConfigurationDefault    = "default"
	BGPConfigurationNodePrefix = "node."
)

// RouterIDSource says where a node's BGP router ID comes from.
// +kubebuilder:validation:Enum=Explicit;NodeIPv4;Hash
type RouterIDSource string

// Router ID sources.
const (
	// RouterIDExplicit is routerID.id (meant for a node's override).
	RouterIDExplicit RouterIDSource = "Explicit"
	// RouterIDNodeIPv4 is the node's IPv4 InternalIP; a node without one
	// uses Hash. The default.
	RouterIDNodeIPv4 RouterIDSource = "NodeIPv4"
	// RouterIDHash is a stable 32-bit hash of the node's name, for
	// IPv6-only nodes.
	RouterIDHash RouterIDSource = "Hash"
)

// BGPConfiguration is the cluster's BGP settings: the object named
// "default" for every node, and optionally "node.<nodename>" whose set
// fields override the default's for that node. Cluster-scoped.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=strait;strait-bgp,shortName=bgpconfig
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default' || self.metadata.name.startsWith('node.')",message="metadata.name must be default (cluster-wide) or node.<nodename> (one node's override)",reason=FieldValueInvalid
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=".spec.asNumber"
// +kubebuilder:printcolumn:name="Mesh",type=boolean,JSONPath=".spec.nodeToNodeMesh.enabled"
// +kubebuilder:printcolumn:name="Router ID",type=string,JSONPath=".spec.routerID.source"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type BGPConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec BGPConfigurationSpec `json:"spec,omitempty"`
}

// BGPConfigurationSpec is the cluster's (or one node's) BGP settings. Every
// field is optional: in a node's override, an unset field takes the
// default object's value; there, an unset field takes Strait's default.
//
// +kubebuilder:validation:XValidation:rule="!has(self.routerID) || !has(self.routerID.source) || self.routerID.source != 'Explicit' || has(self.routerID.id)",message="routerID.id is required when routerID.source is Explicit",fieldPath=".routerID.id",reason=FieldValueRequired
type BGPConfigurationSpec struct {
	// ASNumber is the nodes' autonomous system (default 64512).
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	ASNumber *int64 `json:"asNumber,omitempty"`

	// RouterID says where each node's router ID comes from.
	//
	// +optional
	RouterID *RouterIDSpec `json:"routerID,omitempty"`

	// ListenPort is the TCP port the speaker accepts sessions on (default
	// 179).
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	ListenPort *int32 `json:"listenPort,omitempty"`

	// NodeToNodeMesh peers every node with every other node (iBGP in
	// asNumber), which native routing needs. Default enabled.
	//
	// +optional
	NodeToNodeMesh *NodeToNodeMesh `json:"nodeToNodeMesh,omitempty"`

	// ServiceClusterIPs, ServiceExternalIPs and ServiceLoadBalancerIPs are
	// the ranges of Service addresses the nodes advertise: a Service's
	// ClusterIP range, ExternalIPs and LoadBalancer ingress IPs are
	// advertised only inside them. Empty: none of that kind.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=64
	ServiceClusterIPs []ServiceIPBlock `json:"serviceClusterIPs,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=64
	ServiceExternalIPs []ServiceIPBlock `json:"serviceExternalIPs,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=64
	ServiceLoadBalancerIPs []ServiceIPBlock `json:"serviceLoadBalancerIPs,omitempty"`

	// ServiceLoadBalancerAggregation: Enabled advertises each
	// serviceLoadBalancerIPs CIDR as one prefix from every node (for
	// externalTrafficPolicy Cluster Services); Disabled (the default)
	// advertises each ingress IP as a /32 or /128.
	//
	// +optional
	// +kubebuilder:validation:Enum=Enabled;Disabled
	ServiceLoadBalancerAggregation string `json:"serviceLoadBalancerAggregation,omitempty"`

	// Communities names community values for prefixAdvertisements.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	Communities []Community `json:"communities,omitempty"`

	// PrefixAdvertisements attach communities to what is advertised inside
	// a CIDR (pod blocks, Service addresses).
	//
	// +optional
	// +kubebuilder:validation:MaxItems=256
	PrefixAdvertisements []PrefixAdvertisement `json:"prefixAdvertisements,omitempty"`

	// SourceInterface and SourceAddress are the default local address of
	// every session (a BGPPeer's own setting overrides them): the address
	// of that interface of the session's family, or that address.
	// Unset: the kernel picks.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[^/\s:]+$`
	SourceInterface string `json:"sourceInterface,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=39
	// +kubebuilder:validation:XValidation:rule="isIP(self)",messageExpression="self + ' is not an IP address'",reason=FieldValueInvalid
	SourceAddress string `json:"sourceAddress,omitempty"`

	// GracefulRestart: peers keep this node's routes while its agent
	// restarts (default enabled, restartTime 120s).
	//
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`
}

// RouterIDSpec selects the router ID.
type RouterIDSpec struct {
	// Source: Explicit (id), NodeIPv4 (default) or Hash.
	//
	// +optional
	Source RouterIDSource `json:"source,omitempty"`
	// ID is the router ID for source Explicit, in dotted-quad form.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",messageExpression="self + ' is not a router ID (an IPv4 address such as 198.51.100.1)'",reason=FieldValueInvalid
	ID string `json:"id,omitempty"`
}

// NodeToNodeMesh configures the iBGP mesh among the nodes.
type NodeToNodeMesh struct {
	// Enabled (default true).
	//
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// Password for the mesh sessions (TCP-MD5), from a Secret in the
	// agent's namespace (strait-system).
	//
	// +optional
	Password *SecretKeyRef `json:"password,omitempty"`
}

// SecretKeyRef names a key of a Secret in the agent's namespace
// (strait-system): the agent may read Secrets there only.
type SecretKeyRef struct {
	// Name of the Secret.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// Key in the Secret's data.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// ServiceIPBlock is a range of Service addresses to advertise.
type ServiceIPBlock struct {
	// CIDR such as 10.96.0.0/16 or 2001:db8:96::/112.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",messageExpression="self + ' is not a CIDR such as 198.18.0.0/24 or 2001:db8:96::/112'",reason=FieldValueInvalid
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).masked() == cidr(self)",messageExpression="'host bits set in ' + self + ': the address must be the network address'",reason=FieldValueInvalid
	CIDR string `json:"cidr"`
}

// Community is a named BGP community value.
type Community struct {
	// Name to refer to the value by in prefixAdvertisements.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-zA-Z][-_a-zA-Z0-9]*$`
	Name string `json:"name"`
	// Value: a standard community "AS:N" (each 0..65535) or a large
	// community "A:B:C" (each 0..4294967295).
	//
	// +required
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]{1,10}:[0-9]{1,10}(:[0-9]{1,10})?$') && (self.split(':').size() == 3 ? self.split(':').all(x, int(x) <= 4294967295) : self.split(':').all(x, int(x) <= 65535))",messageExpression="self + ' is not a community: AS:N (each 0..65535) or large A:B:C (each 0..4294967295)'",reason=FieldValueInvalid
	Value string `json:"value"`
}

// PrefixAdvertisement attaches communities to prefixes inside CIDR.
type PrefixAdvertisement struct {
	// CIDR the advertised prefix must be inside.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",messageExpression="self + ' is not a CIDR such as 10.244.0.0/16 or fd10:244::/56'",reason=FieldValueInvalid
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).masked() == cidr(self)",messageExpression="'host bits set in ' + self + ': the address must be the network address'",reason=FieldValueInvalid
	CIDR string `json:"cidr"`
	// Communities: names from spec.communities, or literal values (AS:N,
	// A:B:C).
	//
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^([a-zA-Z][-_a-zA-Z0-9]*|[0-9]{1,10}:[0-9]{1,10}(:[0-9]{1,10})?)$`
	Communities []string `json:"communities"`
}

// GracefulRestart configures BGP graceful restart (RFC 4724).
type GracefulRestart struct {
	// Enabled (default true).
	//
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// RestartTime: how long peers keep the routes of a restarting node
	// (default 120s, 1s..4095s).
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+([.][0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('4095s'))",message="must be between 1s and 4095s",reason=FieldValueInvalid
	RestartTime *metav1.Duration `json:"restartTime,omitempty"`
}

// BGPConfigurationList is a list of BGPConfigurations.
//
// +kubebuilder:object:root=true
type BGPConfigurationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPConfiguration `json:"items"`
}
