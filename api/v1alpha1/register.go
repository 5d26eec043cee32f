package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName and Version of this API.
const (
	GroupName = "strait.dev"
	Version   = "v1alpha1"
)

// SchemeGroupVersion is strait.dev/v1alpha1. It is a variable only because Go
// has no struct constants: never assign to it.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: Version}

// Resource returns the GroupResource of a resource of this group, e.g.
// Resource("ippools").
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

// AddToScheme registers the kinds of this API (IPPool, IPAMBlock,
// BGPConfiguration, BGPPeer, BGPNodeStatus, LoadBalancerIPPool) and their
// lists with s, and the defaulting functions (run by s.Default).
func AddToScheme(s *runtime.Scheme) error {
	b := runtime.NewSchemeBuilder(addKnownTypes, addDefaultingFuncs)
	return b.AddToScheme(s)
}

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion,
		&IPPool{}, &IPPoolList{},
		&IPAMBlock{}, &IPAMBlockList{},
		&BGPConfiguration{}, &BGPConfigurationList{},
		&BGPPeer{}, &BGPPeerList{},
		&BGPNodeStatus{}, &BGPNodeStatusList{},
		&LoadBalancerIPPool{}, &LoadBalancerIPPoolList{},
	)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}

func addDefaultingFuncs(s *runtime.Scheme) error {
	s.AddTypeDefaultingFunc(&IPPool{}, func(o any) { SetDefaults_IPPool(o.(*IPPool)) })
	s.AddTypeDefaultingFunc(&IPPoolList{}, func(o any) {
		l := o.(*IPPoolList)
		for i := range l.Items {
			SetDefaults_IPPool(&l.Items[i])
		}
	})
	return nil
}
