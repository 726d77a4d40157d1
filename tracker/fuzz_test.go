package tracker

import (
	"errors"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// fuzzLimits are small enough that the fuzzer reaches the caps.
var fuzzLimits = Limits{MaxBody: 64 << 10, MaxPeers: 8, MinInterval: 10 * time.Second, MaxInterval: time.Hour}

// checkAnnounce asserts the invariants every parsed reply holds.
func checkAnnounce(t *testing.T, resp AnnounceResponse, err error, lim Limits) {
	t.Helper()
	lim = lim.withDefaults()
	if err != nil {
		var fe *FailureError
		if !errors.Is(err, ErrBadResponse) && !errors.As(err, &fe) {
			t.Fatalf("error %v is neither ErrBadResponse nor *FailureError", err)
		}
		if fe != nil && len(fe.Reason) > maxReasonLen {
			t.Fatalf("failure reason of %d bytes", len(fe.Reason))
		}
		return
	}
	if len(resp.Peers) > lim.MaxPeers {
		t.Fatalf("%d peers > MaxPeers %d", len(resp.Peers), lim.MaxPeers)
	}
	seen := map[string]bool{}
	for _, p := range resp.Peers {
		if !usablePeer(p) || p.Addr().Is4In6() {
			t.Fatalf("unusable peer %v", p)
		}
		if seen[p.String()] {
			t.Fatalf("duplicate peer %v", p)
		}
		seen[p.String()] = true
	}
	if resp.Interval < lim.MinInterval || resp.Interval > lim.MaxInterval {
		t.Fatalf("interval %v outside [%v, %v]", resp.Interval, lim.MinInterval, lim.MaxInterval)
	}
	if resp.MinInterval < lim.MinInterval || resp.MinInterval > resp.Interval {
		t.Fatalf("min interval %v outside [%v, %v]", resp.MinInterval, lim.MinInterval, resp.Interval)
	}
	if resp.Complete < 0 || resp.Incomplete < 0 {
		t.Fatalf("negative counts %d, %d", resp.Complete, resp.Incomplete)
	}
	if len(resp.Warning) > maxReasonLen || len(resp.TrackerID) > maxTrackerIDLen {
		t.Fatalf("warning or tracker id too long")
	}
}

func FuzzAnnounceResponse(f *testing.F) {
	f.Add([]byte(bdict("interval", bint(1800), "peers", bstr(compact("1.2.3.4:6881")))))
	f.Add([]byte(bdict("peers", blist(bdict("ip", bstr("10.0.0.1"), "port", bint(80))))))
	f.Add([]byte(bdict("failure reason", bstr("nope"))))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, lim := range []Limits{{}, fuzzLimits} {
			resp, err := ParseAnnounceResponse(body, lim)
			checkAnnounce(t, resp, err, lim)
		}
	})
}

func FuzzUDPResponse(f *testing.F) {
	f.Add(udpAnnounceReply(1, 1800, 2, 3, compact("1.2.3.4:6881")))
	f.Add(udpError(1, "bad"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, lim := range []Limits{{}, fuzzLimits} {
			for _, ipv6 := range []bool{false, true} {
				resp, err := ParseUDPAnnounceResponse(b, ipv6, lim)
				checkAnnounce(t, resp, err, lim)
			}
		}
		if id, err := parseUDPConnectResponse(b); err == nil && len(b) < 16 {
			t.Fatalf("connect id %x from %d bytes", id, len(b))
		}
		hashes := []metainfo.Hash{{1}, {2}, {3}}
		if m, err := parseUDPScrapeResponse(b, hashes); err == nil && (len(m) > len(hashes) || len(m) > (len(b)-8)/12) {
			t.Fatalf("%d scrape entries from %d bytes", len(m), len(b))
		}
	})
}

func FuzzScrapeResponse(f *testing.F) {
	f.Add([]byte(bdict("files", bdict(string(trickyHash[:]), bdict("complete", bint(1))))))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseScrapeResponse(body, fuzzLimits)
		if err != nil {
			return
		}
		for _, s := range m {
			if s.Complete < 0 || s.Downloaded < 0 || s.Incomplete < 0 {
				t.Fatalf("negative count %+v", s)
			}
		}
	})
}
