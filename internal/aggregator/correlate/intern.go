package correlate

// interner maps values to small ids with reference counts, so a connection
// holds a uint32 instead of a string header and an id is reused once no
// connection refers to it any more (pods come and go). Id 0 is the zero
// value and is never counted.
type interner[T comparable] struct {
	ids  map[T]uint32
	vals []T
	refs []uint32
	free []uint32
}

func newInterner[T comparable]() *interner[T] {
	var zero T
	return &interner[T]{ids: map[T]uint32{}, vals: []T{zero}, refs: []uint32{0}}
}

// acquire returns v's id and counts one more reference to it.
func (in *interner[T]) acquire(v T) uint32 {
	var zero T
	if v == zero {
		return 0
	}
	if id, ok := in.ids[v]; ok {
		in.refs[id]++
		return id
	}
	var id uint32
	if n := len(in.free); n > 0 {
		id = in.free[n-1]
		in.free = in.free[:n-1]
		in.vals[id], in.refs[id] = v, 1
	} else {
		id = uint32(len(in.vals))
		in.vals = append(in.vals, v)
		in.refs = append(in.refs, 1)
	}
	in.ids[v] = id
	return id
}

// release drops one reference to id.
func (in *interner[T]) release(id uint32) {
	if id == 0 {
		return
	}
	in.refs[id]--
	if in.refs[id] == 0 {
		var zero T
		delete(in.ids, in.vals[id])
		in.vals[id] = zero
		in.free = append(in.free, id)
	}
}

// replace makes *slot refer to v, releasing what it referred to.
func (in *interner[T]) replace(slot *uint32, v T) {
	if in.vals[*slot] == v {
		return
	}
	in.release(*slot)
	*slot = in.acquire(v)
}

func (in *interner[T]) get(id uint32) T { return in.vals[id] }

func (in *interner[T]) live() int { return len(in.ids) }
