package server

import (
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/tracker"
)

// serveRaw sends one GET with a raw query through h and returns the
// decoded reply; the body must always be a bencoded dictionary.
func serveRaw(t *testing.T, h *Handler, path, rawQuery string) reply {
	r := &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: path, RawQuery: rawQuery},
		Header:     http.Header{},
		RemoteAddr: "127.0.0.1:1234",
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	var rep reply
	if err := bencode.Unmarshal(w.Body.Bytes(), &rep); err != nil {
		t.Fatalf("body %q: %v", w.Body.Bytes(), err)
	}
	return rep
}

func FuzzParseAnnounce(f *testing.F) {
	f.Add(query(hashN(1), idN(1), 6881, "uploaded=0", "downloaded=0", "left=10", "event=started", "numwant=50", "compact=1"))
	h := New(Config{})
	f.Fuzz(func(t *testing.T, q string) {
		r, err := ParseAnnounce(q)
		rep := serveRaw(t, h, "/announce", q)
		if err != nil {
			if rep.Failure != err.Error() {
				t.Fatalf("failure %q, parse error %q", rep.Failure, err)
			}
			return
		}
		if rep.Failure != "" {
			t.Fatalf("parsed, but refused: %q", rep.Failure)
		}
		if r.Port == 0 || r.Uploaded < 0 || r.Downloaded < 0 || r.Left < 0 || r.NumWant < -1 {
			t.Fatalf("out of range: %+v", r)
		}
		if r.Event < tracker.None || r.Event > tracker.Stopped {
			t.Fatalf("event %d", r.Event)
		}
		if r.IP.IsValid() && (r.IP.Is4In6() || r.IP.Zone() != "") {
			t.Fatalf("ip %v not normalised", r.IP)
		}
		// What parsed re-encodes to the same request.
		r2, err := ParseAnnounce(query(r.InfoHash, r.PeerID, int(r.Port)))
		if err != nil || r2.InfoHash != r.InfoHash || r2.PeerID != r.PeerID || r2.Port != r.Port {
			t.Fatalf("round trip: %+v, %v", r2, err)
		}
		if r.Compact {
			if n := len(rep.compactPeers(t)); n > DefaultNumWant {
				t.Fatalf("%d peers", n)
			}
		} else {
			var ps []dictPeer
			if err := bencode.Unmarshal(rep.Peers, &ps); err != nil || len(ps) > DefaultNumWant {
				t.Fatalf("%d dictionary peers, %v", len(ps), err)
			}
		}
	})
}

func FuzzParseScrape(f *testing.F) {
	f.Add("info_hash=" + escHash(hashN(1)))
	h := New(Config{})
	f.Fuzz(func(t *testing.T, q string) {
		hs, err := ParseScrape(q, 0, nil)
		rep := serveRaw(t, h, "/scrape", q)
		if err != nil {
			if len(hs) != 0 || rep.Failure != err.Error() {
				t.Fatalf("error %v with %d hashes, failure %q", err, len(hs), rep.Failure)
			}
			return
		}
		if len(hs) == 0 || len(hs) > tracker.MaxScrapeHashes || rep.Failure != "" {
			t.Fatalf("%d hashes, failure %q", len(hs), rep.Failure)
		}
	})
}

func FuzzUDPRequest(f *testing.F) {
	f.Add(connectPkt(1), false)
	f.Add(udpAnn{tid: 2, ih: hashN(1), peer: 1, port: 6881, numWant: -1}.bytes(), true)
	clock := newClock()
	h := New(Config{Now: clock.Now})
	u := h.newUDPSession()
	from := netip.MustParseAddrPort("192.0.2.1:5000")
	// A few peers, so that announces have something to return.
	for i := range 5 {
		p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 1)
		u.handle(udpAnn{id: u.connID(p, clock.Now().Unix()/60), ih: hashN(1), peer: i, port: 7000}.bytes(), p, clock.Now())
	}
	f.Fuzz(func(t *testing.T, pkt []byte, validID bool) {
		if validID && len(pkt) >= 8 {
			pkt = append([]byte(nil), pkt...) // inputs are not ours to modify
			binary.BigEndian.PutUint64(pkt, u.connID(from, clock.Now().Unix()/60))
		}
		r := u.handle(pkt, from, clock.Now())
		if r == nil {
			return
		}
		if len(r) < 8 || string(r[4:8]) != string(pkt[12:16]) {
			t.Fatalf("reply %x to %x", r, pkt)
		}
		switch a := binary.BigEndian.Uint32(r); a {
		case udpActionConnect:
			if len(r) != 16 || len(pkt) < 16 {
				t.Fatalf("connect reply %x", r)
			}
		case udpActionAnnounce:
			if len(r) < 20 || (len(r)-20)%6 != 0 || len(r) > 20+6*DefaultNumWant {
				t.Fatalf("announce reply of %d bytes", len(r))
			}
		case udpActionScrape:
			if (len(r)-8)%12 != 0 || len(r) > 8+12*tracker.MaxScrapeHashes {
				t.Fatalf("scrape reply of %d bytes", len(r))
			}
		case udpActionError:
			if !validID && len(r) > len(pkt) {
				t.Fatalf("error reply %d bytes to a %d-byte unauthenticated request", len(r), len(pkt))
			}
		default:
			t.Fatalf("action %d", a)
		}
	})
}
