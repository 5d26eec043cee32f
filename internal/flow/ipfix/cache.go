package ipfix

import (
	"sync"
	"time"
)

// SessionID identifies one exporter transport session: a TCP/TLS connection, or a UDP source address and
// port. Callers allocate them (for example with TemplateCache.NewSession).
type SessionID uint64

type templateKey struct {
	session SessionID
	domain  uint32
	id      uint16
}

type cacheEntry struct {
	t       *Template
	learned time.Time
	udp     bool
}

// TemplateCache holds templates keyed by (exporter session, observation domain, template id). It is safe for
// concurrent use. Templates of UDP sessions expire udpTimeout after they were last (re)announced
// (RFC 7011 8.4); a zero timeout disables expiry.
type TemplateCache struct {
	mu         sync.RWMutex
	m          map[templateKey]cacheEntry
	sessions   map[SessionID]bool // session -> udp
	next       SessionID
	udpTimeout time.Duration
}

// NewTemplateCache returns an empty cache.
func NewTemplateCache(udpTimeout time.Duration) *TemplateCache {
	return &TemplateCache{m: map[templateKey]cacheEntry{}, sessions: map[SessionID]bool{}, udpTimeout: udpTimeout}
}

// NewSession allocates a session id; udp selects template expiry.
func (c *TemplateCache) NewSession(udp bool) SessionID {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	c.sessions[c.next] = udp
	return c.next
}

// Add stores t, replacing any template with the same key.
func (c *TemplateCache) Add(s SessionID, domain uint32, t *Template, now time.Time) {
	c.mu.Lock()
	udp := c.sessions[s]
	c.m[templateKey{s, domain, t.ID}] = cacheEntry{t: t, learned: now, udp: udp}
	c.mu.Unlock()
}

// Get returns the template, or nil if it is unknown or expired.
func (c *TemplateCache) Get(s SessionID, domain uint32, id uint16, now time.Time) *Template {
	c.mu.RLock()
	e, ok := c.m[templateKey{s, domain, id}]
	c.mu.RUnlock()
	if !ok {
		return nil
	}
	if e.udp && c.udpTimeout > 0 && now.Sub(e.learned) > c.udpTimeout {
		c.mu.Lock()
		if cur, ok := c.m[templateKey{s, domain, id}]; ok && cur.t == e.t {
			delete(c.m, templateKey{s, domain, id})
		}
		c.mu.Unlock()
		return nil
	}
	return e.t
}

// Withdraw removes one template; it reports whether it existed.
func (c *TemplateCache) Withdraw(s SessionID, domain uint32, id uint16) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := templateKey{s, domain, id}
	_, ok := c.m[k]
	delete(c.m, k)
	return ok
}

// WithdrawAll removes all data templates (options=false) or all options templates (options=true) of
// (session, domain), as a withdrawal with template id 2 or 3 asks. It returns how many were removed.
func (c *TemplateCache) WithdrawAll(s SessionID, domain uint32, options bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, e := range c.m {
		if k.session == s && k.domain == domain && e.t.Options() == options {
			delete(c.m, k)
			n++
		}
	}
	return n
}

// DropSession forgets a session and all its templates (the transport session ended).
func (c *TemplateCache) DropSession(s SessionID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k := range c.m {
		if k.session == s {
			delete(c.m, k)
			n++
		}
	}
	delete(c.sessions, s)
	return n
}

// Expire removes expired UDP templates and returns how many it removed.
func (c *TemplateCache) Expire(now time.Time) int {
	if c.udpTimeout <= 0 {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, e := range c.m {
		if e.udp && now.Sub(e.learned) > c.udpTimeout {
			delete(c.m, k)
			n++
		}
	}
	return n
}

// Len returns the number of templates held.
func (c *TemplateCache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
