package dht

import (
	"net/netip"
	"time"
)

// maxLimited bounds the sources the limiter tracks at once.
const maxLimited = 10000

// limiter is a token bucket per source, so that one host cannot make us
// spend our bandwidth or CPU on it (a query or reply flood). It is a
// plain type; the clock is passed in.
type limiter struct {
	rate    float64 // tokens per second
	burst   float64
	sources map[netip.AddrPort]*tokenBucket
}

type tokenBucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate, burst float64) *limiter {
	return &limiter{rate: rate, burst: burst, sources: map[netip.AddrPort]*tokenBucket{}}
}

// allow takes one token from src's bucket, reporting whether there was one.
func (l *limiter) allow(src netip.AddrPort, now time.Time) bool {
	b := l.sources[src]
	if b == nil {
		if len(l.sources) >= maxLimited {
			l.sweep(now)
			if len(l.sources) >= maxLimited {
				return false // too many sources at once: fail closed
			}
		}
		b = &tokenBucket{tokens: l.burst, last: now}
		l.sources[src] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets sources whose buckets are full again: they are as if new.
func (l *limiter) sweep(now time.Time) {
	for src, b := range l.sources {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.sources, src)
		}
	}
}
