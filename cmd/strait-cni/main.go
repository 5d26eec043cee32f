// Command strait-cni is the CNI plugin binary (installed as "strait" in the
// CNI bin dir). It is a thin shim: skel decodes the invocation and the agent
// on the node does the work, reached over the unix socket named in the
// network configuration.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/strait-net/strait/internal/cni"
)

func main() {
	shim := &cni.Shim{Stdout: os.Stdout}
	skel.PluginMainFuncs(shim.Funcs(), version.PluginSupports(cni.SupportedVersions()...), "strait CNI plugin (forwards to the strait agent)")
}
