package ipam

import (
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

func openBoltT(t testing.TB, path string) *BoltStore {
	t.Helper()
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	return s
}

// TestBoltPersistence: allocations (with owner details and Created) and
// cursors survive close and reopen, and allocation continues after the
// persisted cursor instead of restarting at the first address.
func TestBoltPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "ipam.db")
	s := openBoltT(t, path)
	pools := []string{"10.0.0.0/24", "fd00::/64"}
	a := newAlloc(t, s, pools...)
	for i := range 6 {
		mustAllocate(t, a, owner(i))
	}
	mustRelease(t, a, owner(2).Key)
	mustRelease(t, a, owner(5).Key) // held the cursor address 10.0.0.6
	if err := a.Update(owner(1).Key, func(o *Owner) { o.HostIface = "vethabc"; o.PodUID = "uid-1" }); err != nil {
		t.Fatal(err)
	}
	list := a.List()
	snap, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	wantCursors := map[string]netip.Addr{"10.0.0.0/24": ip("10.0.0.6"), "fd00::/64": ip("fd00::6")}
	if !maps.Equal(snap.Cursors, wantCursors) {
		t.Fatalf("cursors = %v, want %v", snap.Cursors, wantCursors)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("parent dir: %v, %v; want mode 0700", fi.Mode(), err)
	}

	s2 := openBoltT(t, path)
	defer s2.Close()
	snap2, err := s2.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(snap2.Cursors, wantCursors) {
		t.Fatalf("reopened cursors = %v, want %v", snap2.Cursors, wantCursors)
	}
	b := newAlloc(t, s2, pools...)
	if got := b.List(); !slices.EqualFunc(got, list, allocEqual) {
		t.Fatalf("reopened List = %+v\nwant %+v", got, list)
	}
	if got, _ := b.Get(owner(1).Key); got.HostIface != "vethabc" || got.PodUID != "uid-1" || got.PodName != "pod1" {
		t.Fatalf("owner fields lost: %+v", got.Owner)
	}
	if got := mustAllocate(t, b, owner(10)); !slices.Equal(got.Addrs, []netip.Addr{ip("10.0.0.7"), ip("fd00::7")}) {
		t.Fatalf("after reopen got %v, want [10.0.0.7 fd00::7] (continue after cursor)", got.Addrs)
	}
}

func TestBoltLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	s := openBoltT(t, path)
	defer s.Close()
	start := time.Now()
	_, err := openBolt(path, 200*time.Millisecond) // flock conflicts across open files, also in-process
	if err == nil {
		t.Fatal("second open of a locked store succeeded")
	}
	if want := "ipam store " + path + " is locked by another process"; !strings.Contains(err.Error(), want) || !errors.Is(err, bolterrors.ErrTimeout) {
		t.Fatalf("err = %v, want %q wrapping bolt ErrTimeout", err, want)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("locked open took %v", d)
	}
}

// TestBoltCorruptRecord: an undecodable record makes Load fail naming the key.
func TestBoltCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	s := openBoltT(t, path)
	a := newAlloc(t, s, "10.0.0.0/24")
	mustAllocate(t, a, owner(1))
	s.Close()

	poke(t, path, bucketAllocations, "strait/c9999/eth0", "{not json")
	s = openBoltT(t, path)
	_, err := s.Load()
	if err == nil || !strings.Contains(err.Error(), "strait/c9999/eth0") || !strings.Contains(err.Error(), "ipam store: load") {
		t.Fatalf("Load err = %v, want naming strait/c9999/eth0", err)
	}
	if _, err := New(s, []netip.Prefix{pfx("10.0.0.0/24")}); err == nil {
		t.Fatal("New over a corrupt store succeeded")
	}
	s.Close()

	// A record stored under the wrong key is also rejected.
	poke(t, path, bucketAllocations, "strait/c9999/eth0", `{"network":"strait","containerID":"c1","ifName":"eth0","addrs":["10.0.0.9"]}`)
	s = openBoltT(t, path)
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "strait/c9999/eth0") {
		t.Fatalf("Load err = %v, want key mismatch naming strait/c9999/eth0", err)
	}
	s.Close()

	poke(t, path, bucketAllocations, "strait/c9999/eth0", "")
	poke(t, path, bucketCursors, "10.0.0.0/24", "not-an-ip")
	s = openBoltT(t, path)
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "10.0.0.0/24") {
		t.Fatalf("Load err = %v, want naming cursor 10.0.0.0/24", err)
	}
	s.Close()
}

func TestBoltSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	openBoltT(t, path).Close()
	poke(t, path, bucketMeta, metaSchemaKey, "2")
	if _, err := OpenBolt(path); err == nil || !strings.Contains(err.Error(), "unsupported schema version") {
		t.Fatalf("OpenBolt err = %v, want unsupported schema version", err)
	}
}

// poke writes (or, with an empty value, deletes) one raw record.
func poke(t testing.TB, path, bucket, key, value string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if value == "" {
			return b.Delete([]byte(key))
		}
		return b.Put([]byte(key), []byte(value))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBoltConcurrentAllocate: concurrent use over the real store keeps
// addresses unique and the file consistent with memory.
func TestBoltConcurrentAllocate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	s := openBoltT(t, path)
	a := newAlloc(t, s, "10.0.0.0/24", "fd00::/120")
	done := make(chan error)
	for w := range 8 {
		go func() {
			for i := range 6 {
				if _, _, err := a.Allocate(owner(w*10 + i)); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	list := a.List()
	checkUnique(t, list)
	s.Close()
	s = openBoltT(t, path)
	defer s.Close()
	if got := newAlloc(t, s, "10.0.0.0/24", "fd00::/120").List(); len(got) != 48 || !slices.EqualFunc(got, list, allocEqual) {
		t.Fatalf("reopened %d allocations, want the 48 in memory", len(got))
	}
}

func BenchmarkAllocateRelease(b *testing.B) {
	s, err := OpenBolt(filepath.Join(b.TempDir(), "ipam.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	a, err := New(s, []netip.Prefix{pfx("10.0.0.0/16"), pfx("fd00::/64")})
	if err != nil {
		b.Fatal(err)
	}
	// Some background allocations so the tree is not trivially small.
	for i := range 100 {
		if _, _, err := a.Allocate(owner(100000 + i)); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		o := owner(i)
		i++
		if _, _, err := a.Allocate(o); err != nil {
			b.Fatal(err)
		}
		if _, _, err := a.Release(o.Key); err != nil {
			b.Fatal(err)
		}
	}
}
