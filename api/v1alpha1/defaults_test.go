package v1alpha1

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestSetDefaultsIPPool(t *testing.T) {
	for _, c := range []struct {
		cidr string
		want int32
	}{{"10.244.0.0/16", 26}, {"fd42:244::/56", 122}, {"banana", 0}} {
		p := pool("p", c.cidr)
		SetDefaults_IPPool(p)
		if p.Spec.BlockSize != c.want || p.Spec.Encapsulation != EncapsulationVXLANCrossSubnet || p.Spec.NATOutgoing == nil || !*p.Spec.NATOutgoing {
			t.Errorf("%s: defaulted to %+v, want blockSize %d, VXLANCrossSubnet, natOutgoing true", c.cidr, p.Spec, c.want)
		}
		if got := pool("p", c.cidr).Spec.EffectiveBlockSize(); got != c.want {
			t.Errorf("%s: EffectiveBlockSize %d, want %d", c.cidr, got, c.want)
		}
	}

	// Set fields stay, an explicit false included.
	f := false
	p := pool("p", "10.0.0.0/8", func(s *IPPoolSpec) { s.BlockSize, s.Encapsulation, s.NATOutgoing = 24, EncapsulationVXLAN, &f })
	SetDefaults_IPPool(p)
	if p.Spec.BlockSize != 24 || p.Spec.Encapsulation != EncapsulationVXLAN || *p.Spec.NATOutgoing || p.Spec.NATOutgoingEnabled() {
		t.Errorf("defaulting changed set fields: %+v", p.Spec)
	}
	if s := (IPPoolSpec{}); !s.NATOutgoingEnabled() || s.EffectiveEncapsulation() != EncapsulationVXLANCrossSubnet {
		t.Error("unset natOutgoing/encapsulation: want true/VXLANCrossSubnet")
	}
}

func TestScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"IPPool", "IPPoolList", "IPAMBlock", "IPAMBlockList"} {
		if !s.Recognizes(SchemeGroupVersion.WithKind(kind)) {
			t.Errorf("scheme does not know %s", kind)
		}
	}
	gvks, _, err := s.ObjectKinds(&IPAMBlock{})
	if err != nil || len(gvks) != 1 || gvks[0].GroupVersion().String() != "strait.dev/v1alpha1" {
		t.Errorf("IPAMBlock kinds %v, %v", gvks, err)
	}
	if Resource("ippools").String() != "ippools.strait.dev" {
		t.Errorf("Resource: %s", Resource("ippools"))
	}

	// s.Default runs SetDefaults_IPPool, on lists too.
	l := &IPPoolList{Items: []IPPool{*pool("a", "fd00::/64")}}
	s.Default(l)
	if l.Items[0].Spec.BlockSize != 122 {
		t.Errorf("scheme defaulting: %+v", l.Items[0].Spec)
	}

	// DeepCopy shares nothing.
	tr := true
	p := pool("p", "10.0.0.0/8", func(s *IPPoolSpec) {
		s.NATOutgoing = &tr
		s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}
	})
	p.Status.Conditions = []metav1.Condition{{Type: ConditionReady, Status: metav1.ConditionTrue}}
	c := p.DeepCopyObject().(*IPPool)
	*c.Spec.NATOutgoing = false
	c.Spec.NodeSelector.MatchLabels["a"] = "c"
	c.Status.Conditions[0].Status = metav1.ConditionFalse
	if !*p.Spec.NATOutgoing || p.Spec.NodeSelector.MatchLabels["a"] != "b" || p.Status.Conditions[0].Status != metav1.ConditionTrue {
		t.Error("DeepCopy shares memory with the original")
	}
}
