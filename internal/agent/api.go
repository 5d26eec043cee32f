package agent

import "net/http"

// registerAPI adds the local CLI API (straitctl) to the agent's unix socket,
// next to the CNI endpoint. The socket is root-only (mode 0600).
func (a *Agent) registerAPI(mux *http.ServeMux) {}
