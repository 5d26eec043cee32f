package correlate

import (
	"hash/maphash"
	"net/netip"
	"unsafe"
)

// key is a connection's post-DNAT 5-tuple, packed without pointers
// (netip.Addr holds a zone pointer).
type key struct {
	src, dst     [16]byte
	sport, dport uint16
	proto        uint8
	v4           uint8
}

func makeKey(r *Record) (key, bool) {
	src, dst := r.Src.Unmap(), r.Dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return key{}, false
	}
	k := key{src: src.As16(), dst: dst.As16(), sport: r.SrcPort, dport: r.DstPort, proto: r.Proto}
	if src.Is4() {
		k.v4 = 1
	}
	return k, true
}

func (k *key) addrs() (netip.Addr, netip.Addr) {
	s, d := netip.AddrFrom16(k.src), netip.AddrFrom16(k.dst)
	if k.v4 == 1 {
		s, d = s.Unmap(), d.Unmap()
	}
	return s, d
}

const chunkBits = 12 // 4096 connections per chunk

// store holds connections in fixed-size chunks (no reallocation and copying
// of a giant slice as it grows) and indexes them by key in an open-addressing
// table of uint32 (entry index + 1; 0 is empty) with linear probing and
// backward-shift deletion, so there are no tombstones.
type store struct {
	seed   maphash.Seed
	chunks [][]conn
	free   []uint32 // entry indexes to reuse
	slots  []uint32
	count  int
}

func newStore() *store {
	return &store{seed: maphash.MakeSeed(), slots: make([]uint32, 1024)}
}

func (s *store) at(i uint32) *conn { return &s.chunks[i>>chunkBits][i&(1<<chunkBits-1)] }

// hash hashes the key's bytes (it has no padding: 16+16+2+2+1+1). Unlike
// maphash.Comparable, this does not make the key escape to the heap.
func (s *store) hash(k *key) uint64 {
	return maphash.Bytes(s.seed, unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k)))
}

// find returns the entry index of k.
func (s *store) find(k *key) (uint32, bool) {
	mask := uint64(len(s.slots) - 1)
	for i := s.hash(k) & mask; ; i = (i + 1) & mask {
		v := s.slots[i]
		if v == 0 {
			return 0, false
		}
		if s.at(v-1).k == *k {
			return v - 1, true
		}
	}
}

// insert adds a zeroed connection for k (which must be absent).
func (s *store) insert(k *key) uint32 {
	if (s.count+1)*4 > len(s.slots)*3 {
		s.grow()
	}
	var idx uint32
	if n := len(s.free); n > 0 {
		idx = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		idx = uint32(len(s.chunks)) << chunkBits
		s.chunks = append(s.chunks, make([]conn, 1<<chunkBits))
		for j := 1<<chunkBits - 1; j > 0; j-- {
			s.free = append(s.free, idx+uint32(j))
		}
	}
	c := s.at(idx)
	*c = conn{k: *k}
	s.place(k, idx)
	s.count++
	return idx
}

func (s *store) place(k *key, idx uint32) {
	mask := uint64(len(s.slots) - 1)
	i := s.hash(k) & mask
	for s.slots[i] != 0 {
		i = (i + 1) & mask
	}
	s.slots[i] = idx + 1
}

func (s *store) grow() {
	old := s.slots
	s.slots = make([]uint32, 2*len(old))
	for _, v := range old {
		if v != 0 {
			s.place(&s.at(v-1).k, v-1)
		}
	}
}

// remove deletes the entry idx (which must be live).
func (s *store) remove(idx uint32) {
	c := s.at(idx)
	mask := uint64(len(s.slots) - 1)
	i := s.hash(&c.k) & mask
	for s.slots[i] != idx+1 {
		i = (i + 1) & mask
	}
	// Backward shift: move later members of the probe run into the hole
	// when their home slot is at or before it.
	for j := (i + 1) & mask; s.slots[j] != 0; j = (j + 1) & mask {
		home := s.hash(&s.at(s.slots[j]-1).k) & mask
		if (j-home)&mask >= (j-i)&mask {
			s.slots[i] = s.slots[j]
			i = j
		}
	}
	s.slots[i] = 0
	*c = conn{}
	s.free = append(s.free, idx)
	s.count--
}

// each calls f with every live entry index; f may remove it.
func (s *store) each(f func(idx uint32)) {
	for ci, ch := range s.chunks {
		for j := range ch {
			if ch[j].seen != 0 {
				f(uint32(ci)<<chunkBits | uint32(j))
			}
		}
	}
}
