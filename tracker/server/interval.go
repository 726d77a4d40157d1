package server

import "time"

// Defaults of the interval policies, those of the original tracker.
const (
	DefaultInterval    = 30 * time.Minute
	DefaultMinInterval = 5 * time.Minute
)

// IntervalPolicy decides how long peers wait between announces. It must be
// safe for concurrent use and cheap: it runs on every announce.
type IntervalPolicy interface {
	// Interval returns the announce interval and min interval for a
	// swarm of swarmSize peers (seeders plus leechers). Both are
	// positive and minInterval ≤ interval.
	Interval(swarmSize int) (interval, minInterval time.Duration)
}

// Static gives every swarm the same interval. (The field is Every, not
// Interval, which is the method's name.)
type Static struct {
	Every time.Duration // the interval; default 30 min
	Min   time.Duration // the min interval; default 5 min; never above Every
}

// Interval implements IntervalPolicy.
func (s Static) Interval(int) (interval, minInterval time.Duration) {
	interval, minInterval = s.Every, s.Min
	if interval <= 0 {
		interval = DefaultInterval
	}
	if minInterval <= 0 {
		minInterval = DefaultMinInterval
	}
	return interval, min(minInterval, interval)
}

// Growing lengthens the interval linearly with swarm size: Base for an
// empty swarm, one more Base for every PerPeers peers, at most Max. A
// swarm's announce rate then levels off near PerPeers/Base instead of
// growing with its size, until Max is reached.
type Growing struct {
	Base     time.Duration // default 30 min
	Min      time.Duration // min interval; default 5 min, never above the interval
	PerPeers int           // default 1000
	Max      time.Duration // default 4 × Base; never below Base
}

// Interval implements IntervalPolicy.
func (g Growing) Interval(swarmSize int) (interval, minInterval time.Duration) {
	base, minI, per, maxI := g.Base, g.Min, g.PerPeers, g.Max
	if base <= 0 {
		base = DefaultInterval
	}
	if minI <= 0 {
		minI = DefaultMinInterval
	}
	if per <= 0 {
		per = 1000
	}
	if maxI <= 0 {
		maxI = 4 * base
	}
	maxI = max(maxI, base)
	interval = maxI
	if n := max(swarmSize, 0); float64(base)*float64(n)/float64(per) < float64(maxI-base) {
		interval = base + time.Duration(float64(base)*float64(n)/float64(per))
	}
	return interval, min(minI, interval)
}

// longestInterval is the policy's interval for a huge swarm or an empty
// one, whichever is longer: what a store's TTL must cover.
func longestInterval(p IntervalPolicy) time.Duration {
	a, _ := p.Interval(0)
	b, _ := p.Interval(1 << 30)
	return max(a, b)
}
