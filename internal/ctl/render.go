package ctl

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/strait-net/strait/internal/ctl/api"
)

func newTab(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// row writes one tab-separated line; empty cells print as "-".
func row(tw io.Writer, cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func renderStatus(w io.Writer, s *api.Status, wide bool) error {
	tw := newTab(w)
	ready := "yes"
	if !s.Ready {
		ready = "no: " + s.NotReadyReason
	}
	mtu := "unknown"
	if s.PodMTU > 0 {
		mtu = strconv.Itoa(s.PodMTU)
	}
	fmt.Fprintf(tw, "Node:\t%s\n", s.Node)
	fmt.Fprintf(tw, "Ready:\t%s\n", ready)
	fmt.Fprintf(tw, "IPAM mode:\t%s\n", s.IPAMMode)
	fmt.Fprintf(tw, "Pod MTU:\t%s\n", mtu)
	if s.Uplink != "" {
		fmt.Fprintf(tw, "Uplink:\t%s\n", s.Uplink)
	}
	fmt.Fprintf(tw, "Peers:\t%d\n", s.Peers)
	fmt.Fprintf(tw, "Routes not installed:\t%d\n", len(s.Skipped))
	if fp := s.FastPath; fp != nil {
		fmt.Fprintf(tw, "eBPF fast path:\t%s\n", renderFastPath(fp))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := renderPools(w, s.Pools); err != nil {
		return err
	}
	if len(s.VTEPs) > 0 {
		fmt.Fprintln(w)
		tw = newTab(w)
		if wide {
			row(tw, "FAMILY", "DEVICE", "UNDERLAY", "MAC", "TUNNEL ADDR", "VNI", "SUBNET")
		} else {
			row(tw, "FAMILY", "DEVICE", "UNDERLAY", "MAC", "TUNNEL ADDR")
		}
		for _, v := range s.VTEPs {
			cells := []string{"IPv" + strconv.Itoa(v.Family), v.Device, v.Underlay, v.MAC, v.TunnelAddr}
			if wide {
				vni := ""
				if v.VNI != 0 {
					vni = strconv.Itoa(v.VNI)
				}
				cells = append(cells, vni, v.Subnet)
			}
			row(tw, cells...)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return renderSkipped(w, s.Skipped)
}

func renderPools(w io.Writer, pools []api.Pool) error {
	fmt.Fprintln(w)
	if len(pools) == 0 {
		fmt.Fprintln(w, "No pools (yet).")
		return nil
	}
	tw := newTab(w)
	row(tw, "POOL", "IPPOOL", "IN USE", "CAPACITY", "USE")
	for _, p := range pools {
		row(tw, p.CIDR, p.IPPool, strconv.Itoa(p.InUse), strconv.FormatUint(p.Capacity, 10), percent(p.InUse, p.Capacity))
	}
	return tw.Flush()
}

func percent(n int, of uint64) string {
	if of == 0 {
		return ""
	}
	return strconv.FormatFloat(100*float64(n)/float64(of), 'f', 0, 64) + "%"
}

func renderSkipped(w io.Writer, skipped []api.Skipped) error {
	if len(skipped) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Routes not installed:")
	tw := newTab(w)
	row(tw, "BLOCK", "NODE", "REASON")
	for _, s := range skipped {
		row(tw, s.Block, s.Node, s.Reason)
	}
	return tw.Flush()
}

func renderRoutes(w io.Writer, r *api.Routes, wide bool) error {
	fmt.Fprintln(w, "Overlay (kernel):")
	if r.OverlayError != "" {
		fmt.Fprintf(w, "  cannot read the kernel state: %s\n", r.OverlayError)
	}
	if len(r.Overlay) == 0 && r.OverlayError == "" {
		fmt.Fprintln(w, "  none")
	}
	if len(r.Overlay) > 0 {
		tw := newTab(w)
		if wide {
			row(tw, "KIND", "PEER", "TARGET", "NEXT HOP", "DEV", "BLOCKS", "FLAGS")
		} else {
			row(tw, "KIND", "PEER", "TARGET", "NEXT HOP", "DEV", "BLOCKS")
		}
		for _, e := range r.Overlay {
			// route: DST via IP; neigh: IP lladdr MAC; fdb: MAC dst IP.
			target, hop := e.Dst, e.IP
			switch e.Kind {
			case "neigh":
				target, hop = e.IP, e.MAC
			case "fdb":
				target, hop = e.MAC, e.IP
			}
			cells := []string{e.Kind, e.Peer, target, hop, e.Dev, strings.Join(e.Blocks, ",")}
			if wide {
				flags := ""
				if e.Onlink {
					flags = "onlink"
				}
				cells = append(cells, flags)
			}
			row(tw, cells...)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if err := renderNextHops(w, r); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Pod routes:")
	if len(r.Pods) == 0 {
		fmt.Fprintln(w, "  none")
	} else {
		tw := newTab(w)
		if wide {
			row(tw, "DESTINATION", "DEV", "POD", "CONTAINER")
		} else {
			row(tw, "DESTINATION", "DEV", "POD")
		}
		for _, p := range r.Pods {
			cells := []string{p.Dst, p.Dev, podName(p.PodNamespace, p.PodName)}
			if wide {
				cells = append(cells, p.ContainerID)
			}
			row(tw, cells...)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return renderSkipped(w, r.Skipped)
}

func podName(ns, name string) string {
	if ns == "" && name == "" {
		return ""
	}
	return ns + "/" + name
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// age formats a duration like kubectl: 45s, 12m, 5h, 3d.
func age(created, now time.Time) string {
	if created.IsZero() {
		return ""
	}
	d := now.Sub(created)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < 2*time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d"
}

func renderIPAM(w io.Writer, m *api.IPAM, wide bool, now time.Time) error {
	fmt.Fprintf(w, "IPAM mode: %s\n", m.Mode)
	if err := renderPools(w, m.Pools); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(m.Allocations) == 0 {
		fmt.Fprintln(w, "No allocations.")
		return nil
	}
	tw := newTab(w)
	if wide {
		row(tw, "NAMESPACE", "POD", "ADDRESSES", "HOST IFACE", "AGE", "CONTAINER", "IFNAME", "NETWORK", "CREATED")
	} else {
		row(tw, "NAMESPACE", "POD", "ADDRESSES", "HOST IFACE", "AGE", "CONTAINER")
	}
	for _, a := range m.Allocations {
		cells := []string{a.PodNamespace, a.PodName, strings.Join(a.Addrs, ","), a.HostIface, age(a.Created, now)}
		if wide {
			created := ""
			if !a.Created.IsZero() {
				created = a.Created.UTC().Format(time.RFC3339)
			}
			cells = append(cells, a.ContainerID, a.IfName, a.Network, created)
		} else {
			cells = append(cells, shortID(a.ContainerID))
		}
		row(tw, cells...)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	noun := "allocations"
	if len(m.Allocations) == 1 {
		noun = "allocation"
	}
	fmt.Fprintf(w, "\n%d %s\n", len(m.Allocations), noun)
	return nil
}

// renderNextHops lists the eBPF fast path's managed next hops, when it is
// on (the agent sends them or an error only then).
func renderNextHops(w io.Writer, r *api.Routes) error {
	if len(r.NextHops) == 0 && r.NextHopsError == "" {
		return nil
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "eBPF fast path next hops (kernel-managed neighbours):")
	if r.NextHopsError != "" {
		fmt.Fprintf(w, "  cannot read them: %s\n", r.NextHopsError)
	}
	if len(r.NextHops) == 0 {
		return nil
	}
	tw := newTab(w)
	row(tw, "ADDRESS", "MAC", "STATE", "DEV", "PEERS")
	for _, h := range r.NextHops {
		mac, peers := h.MAC, strings.Join(h.Peers, ",")
		if mac == "" {
			mac = "-"
		}
		if peers == "" {
			peers = "-"
		}
		row(tw, h.IP, mac, h.State, h.Dev, peers)
	}
	return tw.Flush()
}

// renderFastPath is the fast path on one line: where it is attached and
// what its programs did with the packets they saw.
func renderFastPath(fp *api.FastPath) string {
	if fp.Error != "" {
		return "on, state unknown: " + fp.Error
	}
	out := fmt.Sprintf("on, %d devices (%d pods), %d next hops kept resolved; packets redirected %d (encapsulated here %d)",
		fp.Devices, fp.Pods, fp.NextHops, fp.Packets["redirected"], fp.Packets["encapsulated"])
	var stack []string
	for _, k := range []string{"local", "nat", "spoofed", "notPod", "fib", "other"} {
		stack = append(stack, fmt.Sprintf("%s %d", k, fp.Packets[k]))
	}
	return out + ", left to the stack: " + strings.Join(stack, ", ")
}
