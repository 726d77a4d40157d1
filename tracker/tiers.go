package tracker

import (
	"math/rand/v2"
	"net/url"
	"time"
)

// Backoff bounds.
const (
	backoffBase = 5 * time.Second
	backoffMax  = time.Hour
)

// Backoff is how long a tracker that has failed fails times in a row is
// left alone: 5 s + 5 s·fails², at most 1 hour (libtorrent's formula with
// tracker_backoff at 100 %). So 10 s, 25 s, 50 s, 85 s, 130 s, … and the
// cap from the 27th failure. It is 0 for fails ≤ 0.
func Backoff(fails int) time.Duration {
	if fails <= 0 {
		return 0
	}
	if fails > 27 { // 5+5·27² s is past the cap; also avoids overflow
		return backoffMax
	}
	return min(backoffBase+backoffBase*time.Duration(fails*fails), backoffMax)
}

// Tiers orders an announce-list's trackers as BEP 12 says and keeps each
// tracker's backoff. It is a plain synchronous type: no clock of its own
// (times are passed in), no locks, no I/O. It is not safe for concurrent
// use; its owner (a torrent's run loop) serialises calls.
type Tiers struct {
	// tiers holds the accepted trackers in BEP 12 order: tier by tier,
	// and within a tier the shuffled order as changed by Success.
	tiers [][]*trackerState
	// byURL indexes every tracker in tiers; URLs are unique.
	byURL map[string]*trackerState
	// dropped counts URLs refused at construction.
	dropped int
}

// trackerState is one tracker's place and failure record.
type trackerState struct {
	url     string
	tier    int
	fails   int       // consecutive failures since the last success
	retryAt time.Time // not to be tried before; zero when not backing off
}

// NewTiers builds the order for an announce-list (BEP 12), shuffling
// each tier with rnd (nil: math/rand/v2's global source). URLs that do
// not parse, have no host, or whose scheme is not http, https or udp are
// dropped without error, as are repeats of a URL already seen; Dropped
// counts them. Tiers left empty are removed.
func NewTiers(tiers [][]string, rnd *rand.Rand) *Tiers {
	t := &Tiers{byURL: map[string]*trackerState{}}
	for _, tier := range tiers {
		var list []*trackerState
		for _, raw := range tier {
			if !acceptableURL(raw) || t.byURL[raw] != nil {
				t.dropped++
				continue
			}
			s := &trackerState{url: raw, tier: len(t.tiers)}
			t.byURL[raw] = s
			list = append(list, s)
		}
		if len(list) == 0 {
			continue
		}
		swap := func(i, j int) { list[i], list[j] = list[j], list[i] }
		if rnd != nil {
			rnd.Shuffle(len(list), swap)
		} else {
			rand.Shuffle(len(list), swap)
		}
		t.tiers = append(t.tiers, list)
	}
	return t
}

// acceptableURL reports whether s is a tracker URL the clients can use.
func acceptableURL(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return false
	}
	switch u.Scheme {
	case "http", "https", "udp":
		return true
	}
	return false
}

// Next returns the tracker to announce to at now: the first one, in BEP
// 12 order, that is not backing off, with wait 0. When every tracker is
// backing off it returns the one free soonest (the earliest in order on a
// tie) and how long until then. With no trackers it returns "" and 0.
func (t *Tiers) Next(now time.Time) (announceURL string, wait time.Duration) {
	var soonest *trackerState
	for _, tier := range t.tiers {
		for _, s := range tier {
			if !now.Before(s.retryAt) {
				return s.url, 0
			}
			if soonest == nil || s.retryAt.Before(soonest.retryAt) {
				soonest = s
			}
		}
	}
	if soonest == nil {
		return "", 0
	}
	return soonest.url, soonest.retryAt.Sub(now)
}

// Success records an answer from announceURL: it clears the tracker's backoff and
// moves it to the front of its tier (BEP 12). Unknown URLs are ignored.
func (t *Tiers) Success(announceURL string) {
	s := t.byURL[announceURL]
	if s == nil {
		return
	}
	s.fails, s.retryAt = 0, time.Time{}
	tier := t.tiers[s.tier]
	for i, x := range tier {
		if x == s {
			copy(tier[1:i+1], tier[:i])
			tier[0] = s
			return
		}
	}
}

// Failure records that announceURL failed at now (no answer, an error, or a
// failure reason): it backs off for Backoff(consecutive failures).
// Unknown URLs are ignored.
func (t *Tiers) Failure(announceURL string, now time.Time) {
	s := t.byURL[announceURL]
	if s == nil {
		return
	}
	s.fails++
	s.retryAt = now.Add(Backoff(s.fails))
}

// Len is the number of accepted trackers.
func (t *Tiers) Len() int { return len(t.byURL) }

// Dropped is the number of URLs refused by NewTiers, for logging.
func (t *Tiers) Dropped() int { return t.dropped }

// URLs returns the tiers in their current order, for status pages.
func (t *Tiers) URLs() [][]string {
	out := make([][]string, len(t.tiers))
	for i, tier := range t.tiers {
		for _, s := range tier {
			out[i] = append(out[i], s.url)
		}
	}
	return out
}
