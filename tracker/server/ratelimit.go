package server

import (
	"net/netip"
	"sync"
	"time"
)

const limiterShards = 16

// limiter is a token bucket per source address (an IPv6 address counts
// by its /64, which one host usually owns whole). Its table is bounded:
// when a shard is full, an arbitrary bucket is forgotten, which at worst
// hands that address a fresh burst.
type limiter struct {
	rate     float64   // tokens per second; read-only
	burst    float64   // bucket size; read-only
	maxShard int       // buckets per shard; read-only
	epoch    time.Time // zero of the tick clock; read-only
	shards   [limiterShards]limiterShard
}

type limiterShard struct {
	mu      sync.Mutex
	buckets map[[16]byte]bucket // at most maxShard entries
	_       [64]byte
}

type bucket struct {
	tokens float64
	last   int64 // tick of the last refill
}

func newLimiter(rate float64, burst, maxEntries int) *limiter {
	l := &limiter{
		rate:     rate,
		burst:    float64(max(burst, 1)),
		maxShard: max(maxEntries/limiterShards, 1),
		epoch:    time.Now(),
	}
	for i := range l.shards {
		l.shards[i].buckets = make(map[[16]byte]bucket)
	}
	return l
}

// allow takes a token for a, and reports whether there was one. Loopback
// is never limited: every peer on this machine shares its address.
func (l *limiter) allow(a netip.Addr, now time.Time) bool {
	var k [16]byte
	a = a.Unmap()
	if a.IsLoopback() {
		return true
	}
	if a.Is4() {
		b := a.As4()
		copy(k[:], b[:])
		k[15] = 4 // keeps 1.2.3.4 apart from the /64 1.2.3.4::
	} else {
		b := a.As16()
		copy(k[:8], b[:8])
	}
	sh := &l.shards[(k[0]^k[1]^k[2]^k[3]^k[5]^k[7])%limiterShards]
	t := int64(now.Sub(l.epoch))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b, ok := sh.buckets[k]
	if !ok {
		if len(sh.buckets) >= l.maxShard {
			for old := range sh.buckets {
				delete(sh.buckets, old)
				break
			}
		}
		b = bucket{tokens: l.burst, last: t}
	} else if t > b.last {
		b.tokens = min(l.burst, b.tokens+float64(t-b.last)/float64(time.Second)*l.rate)
		b.last = t
	}
	ok = b.tokens >= 1
	if ok {
		b.tokens--
	}
	sh.buckets[k] = b
	return ok
}
