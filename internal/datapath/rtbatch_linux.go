package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// rtBatch sends rtnetlink requests to the node's kernel many per sendmsg and
// matches each acknowledgement to its request by sequence number. The
// kernel handles the requests of one sendmsg in order and acknowledges each
// (errors included) before the call returns, so a chunk costs two system
// calls instead of two per request: a cold resync of 1,000 peers is 3,000
// requests (BenchmarkResync1000).
type rtBatch struct {
	fd  int
	seq uint32
	out []byte
	in  []byte
}

// rtBatchChunk is the requests per sendmsg. Their acknowledgements (each
// carries the request's header) fit the socket's default receive buffer
// with room to spare.
const rtBatchChunk = 64

// openRTBatch opens a blocking NETLINK_ROUTE socket in the namespace n.
func openRTBatch(n ns.NetNS) (*rtBatch, error) {
	fd := -1
	err := n.Do(func(ns.NetNS) error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open netlink socket in %s: %w", n.Path(), err)
	}
	b := &rtBatch{fd: fd, in: make([]byte, 1<<16)}
	// A kernel that never answers must not hang the agent.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10}); err != nil {
		b.close()
		return nil, fmt.Errorf("netlink socket receive timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		b.close()
		return nil, fmt.Errorf("bind netlink socket: %w", err)
	}
	return b, nil
}

func (b *rtBatch) close() { _ = unix.Close(b.fd) }

// do sends reqs (at most rtBatchChunk) and returns each one's outcome: nil
// when the kernel acknowledged it, else its errno. An error of the socket itself (the outcomes are then
// unknown) leaves the socket unusable: the caller closes it.
func (b *rtBatch) do(reqs []*nl.NetlinkRequest) ([]error, error) {
	if len(reqs) > rtBatchChunk {
		return nil, fmt.Errorf("%d netlink requests in one batch, at most %d", len(reqs), rtBatchChunk)
	}
	b.out = b.out[:0]
	first := b.seq + 1
	for _, r := range reqs {
		b.seq++
		r.Seq = b.seq
		r.Flags |= unix.NLM_F_ACK
		b.out = append(b.out, r.Serialize()...)
	}
	errs := make([]error, len(reqs))
	if err := unix.Sendto(b.fd, b.out, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("send %d netlink requests: %w", len(reqs), err)
	}
	acked := make([]bool, len(reqs))
	for pending := len(reqs); pending > 0; {
		n, _, err := unix.Recvfrom(b.fd, b.in, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read netlink acknowledgements (%d of %d missing): %w", pending, len(reqs), err)
		}
		msgs, err := syscall.ParseNetlinkMessage(b.in[:n])
		if err != nil {
			return nil, fmt.Errorf("parse netlink acknowledgements: %w", err)
		}
		for _, m := range msgs {
			i := m.Header.Seq - first // wraps past the chunk for stale answers
			if m.Header.Type != unix.NLMSG_ERROR || i >= uint32(len(reqs)) || acked[i] {
				continue
			}
			acked[i] = true
			pending--
			if len(m.Data) < 4 {
				errs[i] = errors.New("short netlink acknowledgement")
			} else if e := int32(binary.NativeEndian.Uint32(m.Data[:4])); e != 0 {
				errs[i] = syscall.Errno(-e)
			}
		}
	}
	return errs, nil
}
