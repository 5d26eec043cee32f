package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

const (
	bucketAllocations = "allocations"
	bucketCursors     = "cursors"
	bucketMeta        = "meta"
	metaSchemaKey     = "schema"
	schemaVersion     = "1"
	// boltLockTimeout bounds the wait for the file lock held by another process.
	boltLockTimeout = 5 * time.Second
)

// BoltStore is a Store in a bbolt file. Layout: bucket "allocations"
// (Key.String() -> JSON Allocation), bucket "cursors" (pool prefix -> address
// text), bucket "meta" ("schema" -> version). Each Commit is one read-write
// transaction, fsynced before it returns (NoSync is never set).
type BoltStore struct {
	db   *bolt.DB
	path string
}

// OpenBolt opens (creating if needed, parent directories with mode 0700) the
// store at path. If another process holds the file lock, it fails after a
// few seconds with "ipam store PATH is locked by another process".
func OpenBolt(path string) (*BoltStore, error) {
	return openBolt(path, boltLockTimeout)
}

func openBolt(path string, lockTimeout time.Duration) (*BoltStore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("ipam store: open %s: %w", path, err)
	}
	opts := *bolt.DefaultOptions
	opts.Timeout = lockTimeout
	opts.NoSync = false
	db, err := bolt.Open(path, 0o600, &opts)
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("ipam store %s is locked by another process: %w", path, err)
		}
		return nil, fmt.Errorf("ipam store: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{bucketAllocations, bucketCursors, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket([]byte(bucketMeta))
		switch v := meta.Get([]byte(metaSchemaKey)); {
		case v == nil:
			return meta.Put([]byte(metaSchemaKey), []byte(schemaVersion))
		case string(v) != schemaVersion:
			return fmt.Errorf("unsupported schema version %q (want %q)", v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("ipam store: open %s: %w", path, err)
	}
	return &BoltStore{db: db, path: path}, nil
}

// Path returns the file the store was opened from.
func (s *BoltStore) Path() string { return s.path }

// Load reads the whole state. A record that does not decode, or whose key
// does not match its content, is an error naming the key.
func (s *BoltStore) Load() (Snapshot, error) {
	snap := Snapshot{Cursors: map[string]netip.Addr{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		allocs, curs := tx.Bucket([]byte(bucketAllocations)), tx.Bucket([]byte(bucketCursors))
		if allocs == nil || curs == nil {
			return fmt.Errorf("missing bucket")
		}
		err := allocs.ForEach(func(k, v []byte) error {
			var al Allocation
			if err := json.Unmarshal(v, &al); err != nil {
				return fmt.Errorf("allocation %q: %w", k, err)
			}
			if al.Key.String() != string(k) {
				return fmt.Errorf("allocation %q: record holds key %q", k, al.Key)
			}
			snap.Allocations = append(snap.Allocations, al)
			return nil
		})
		if err != nil {
			return err
		}
		return curs.ForEach(func(k, v []byte) error {
			ad, err := netip.ParseAddr(string(v))
			if err != nil {
				return fmt.Errorf("cursor %q: %w", k, err)
			}
			snap.Cursors[string(k)] = ad
			return nil
		})
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("ipam store: load %s: %w", s.path, err)
	}
	return snap, nil
}

// Commit applies c in one bbolt transaction (deletes, then puts, then
// cursors); when it returns nil the change is on disk.
func (s *BoltStore) Commit(c Change) error {
	// Encode outside the transaction: the write lock is held shorter.
	puts := make([][2][]byte, 0, len(c.Put))
	for _, al := range c.Put {
		v, err := json.Marshal(al)
		if err != nil {
			return fmt.Errorf("ipam store: commit: encode %s: %w", al.Key, err)
		}
		puts = append(puts, [2][]byte{[]byte(al.Key.String()), v})
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		allocs, curs := tx.Bucket([]byte(bucketAllocations)), tx.Bucket([]byte(bucketCursors))
		if allocs == nil || curs == nil {
			return fmt.Errorf("missing bucket")
		}
		for _, k := range c.Delete {
			if err := allocs.Delete([]byte(k.String())); err != nil {
				return fmt.Errorf("delete %s: %w", k, err)
			}
		}
		for _, kv := range puts {
			if err := allocs.Put(kv[0], kv[1]); err != nil {
				return fmt.Errorf("put %s: %w", kv[0], err)
			}
		}
		for pfx, ad := range c.Cursors {
			if err := curs.Put([]byte(pfx), []byte(ad.String())); err != nil {
				return fmt.Errorf("cursor %s: %w", pfx, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ipam store: commit: %w", err)
	}
	return nil
}

// Close releases the file and its lock.
func (s *BoltStore) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("ipam store: close %s: %w", s.path, err)
	}
	return nil
}
