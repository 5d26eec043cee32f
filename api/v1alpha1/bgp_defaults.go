package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGP defaults: what an unset field means.
const (
	DefaultASNumber         = 64512
	DefaultBGPPort          = 179
	DefaultKeepaliveTime    = 3 * time.Second
	DefaultHoldTime         = 9 * time.Second
	DefaultConnectRetryTime = 2 * time.Second
	DefaultRestartTime      = 120 * time.Second
	DefaultBFDInterval      = 300 * time.Millisecond
	DefaultBFDMultiplier    = 3
	DefaultEBGPMultihopTTL  = 1
	AggregationEnabled      = "Enabled"
	AggregationDisabled     = "Disabled"
)

// BGPConfigurationNodeName is the name of node's override object.
func BGPConfigurationNodeName(node string) string { return BGPConfigurationNodePrefix + node }

// MergeBGPConfiguration returns the configuration for one node: the
// default object's spec with every field the node's override sets
// replaced by the override's (a whole field at a time: a list or struct in
// the override replaces the default's). Either may be nil.
func MergeBGPConfiguration(def, node *BGPConfigurationSpec) BGPConfigurationSpec {
	var out BGPConfigurationSpec
	if def != nil {
		out = *def.DeepCopy()
	}
	if node == nil {
		return out
	}
	n := node.DeepCopy()
	out.ASNumber = orElse(n.ASNumber, out.ASNumber)
	out.RouterID = orElse(n.RouterID, out.RouterID)
	out.ListenPort = orElse(n.ListenPort, out.ListenPort)
	out.NodeToNodeMesh = orElse(n.NodeToNodeMesh, out.NodeToNodeMesh)
	out.GracefulRestart = orElse(n.GracefulRestart, out.GracefulRestart)
	for _, l := range []struct{ dst, src *[]ServiceIPBlock }{
		{&out.ServiceClusterIPs, &n.ServiceClusterIPs},
		{&out.ServiceExternalIPs, &n.ServiceExternalIPs},
		{&out.ServiceLoadBalancerIPs, &n.ServiceLoadBalancerIPs},
	} {
		if *l.src != nil {
			*l.dst = *l.src
		}
	}
	if n.ServiceLoadBalancerAggregation != "" {
		out.ServiceLoadBalancerAggregation = n.ServiceLoadBalancerAggregation
	}
	if n.Communities != nil {
		// Names merge: the node's value wins for a name both define.
		byName := map[string]int{}
		for i, c := range out.Communities {
			byName[c.Name] = i
		}
		for _, c := range n.Communities {
			if i, ok := byName[c.Name]; ok {
				out.Communities[i] = c
			} else {
				out.Communities = append(out.Communities, c)
			}
		}
	}
	if n.PrefixAdvertisements != nil {
		out.PrefixAdvertisements = n.PrefixAdvertisements
	}
	if n.SourceAddress != "" || n.SourceInterface != "" {
		out.SourceAddress, out.SourceInterface = n.SourceAddress, n.SourceInterface
	}
	return out
}

// orElse is v if set, else def.
func orElse[T any](v, def *T) *T {
	if v != nil {
		return v
	}
	return def
}

// EffectiveASNumber is spec.asNumber or DefaultASNumber.
func (s *BGPConfigurationSpec) EffectiveASNumber() uint32 {
	if s.ASNumber == nil {
		return DefaultASNumber
	}
	return uint32(*s.ASNumber)
}

// EffectiveListenPort is spec.listenPort or 179.
func (s *BGPConfigurationSpec) EffectiveListenPort() int32 {
	if s.ListenPort == nil {
		return DefaultBGPPort
	}
	return *s.ListenPort
}

// MeshEnabled is spec.nodeToNodeMesh.enabled, true when unset.
func (s *BGPConfigurationSpec) MeshEnabled() bool {
	return s.NodeToNodeMesh == nil || s.NodeToNodeMesh.Enabled == nil || *s.NodeToNodeMesh.Enabled
}

// EffectiveRouterIDSource is spec.routerID.source, NodeIPv4 when unset.
func (s *BGPConfigurationSpec) EffectiveRouterIDSource() RouterIDSource {
	if s.RouterID == nil || s.RouterID.Source == "" {
		return RouterIDNodeIPv4
	}
	return s.RouterID.Source
}

// Aggregated says whether LoadBalancer ranges are advertised whole.
func (s *BGPConfigurationSpec) Aggregated() bool {
	return s.ServiceLoadBalancerAggregation == AggregationEnabled
}

// GracefulRestartSettings is graceful restart as the speaker needs it.
type GracefulRestartSettings struct {
	Enabled     bool
	RestartTime time.Duration
}

// EffectiveGracefulRestart resolves a peer's graceful restart: the peer's
// own, else the configuration's, else enabled with 120s.
func EffectiveGracefulRestart(cfg, peer *GracefulRestart) GracefulRestartSettings {
	out := GracefulRestartSettings{Enabled: true, RestartTime: DefaultRestartTime}
	for _, g := range []*GracefulRestart{cfg, peer} {
		if g == nil {
			continue
		}
		if g.Enabled != nil {
			out.Enabled = *g.Enabled
		}
		if g.RestartTime != nil {
			out.RestartTime = g.RestartTime.Duration
		}
	}
	return out
}

// TimerSettings are a session's timers with defaults applied.
type TimerSettings struct {
	Keepalive, Hold, ConnectRetry time.Duration
}

// EffectiveTimers resolves timers with their defaults.
func EffectiveTimers(t *BGPTimers) TimerSettings {
	out := TimerSettings{Keepalive: DefaultKeepaliveTime, Hold: DefaultHoldTime, ConnectRetry: DefaultConnectRetryTime}
	if t == nil {
		return out
	}
	set := func(d *metav1.Duration, dst *time.Duration) {
		if d != nil && d.Duration > 0 {
			*dst = d.Duration
		}
	}
	set(t.KeepaliveTime, &out.Keepalive)
	set(t.HoldTime, &out.Hold)
	set(t.ConnectRetryTime, &out.ConnectRetry)
	return out
}

// BFDSettings is BFD with defaults applied.
type BFDSettings struct {
	MinTx, MinRx time.Duration
	Multiplier   int
}

// EffectiveBFD resolves BFD; nil when b is nil (disabled).
func EffectiveBFD(b *BFD) *BFDSettings {
	if b == nil {
		return nil
	}
	out := &BFDSettings{MinTx: DefaultBFDInterval, MinRx: DefaultBFDInterval, Multiplier: DefaultBFDMultiplier}
	if b.MinTx != nil && b.MinTx.Duration > 0 {
		out.MinTx = b.MinTx.Duration
	}
	if b.MinRx != nil && b.MinRx.Duration > 0 {
		out.MinRx = b.MinRx.Duration
	}
	if b.Multiplier > 0 {
		out.Multiplier = int(b.Multiplier)
	}
	return out
}
