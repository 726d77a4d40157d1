package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/metainfo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// hashN is a deterministic info-hash; hashes with distinct n differ.
func hashN(n int) metainfo.Hash {
	var h metainfo.Hash
	copy(h[:], fmt.Sprintf("hash-%015d", n))
	return h
}

// idN is a deterministic peer id.
func idN(n int) [20]byte {
	var id [20]byte
	copy(id[:], fmt.Sprintf("-TB0001-%012d", n))
	return id
}

// esc percent-encodes every byte, as the most careful clients do.
func esc(b []byte) string {
	const hexDigits = "0123456789ABCDEF"
	out := make([]byte, 0, 3*len(b))
	for _, c := range b {
		out = append(out, '%', hexDigits[c>>4], hexDigits[c&15])
	}
	return string(out)
}

// query builds an announce query: the three required parameters, then
// extra ones ("k=v") as given.
func query(ih metainfo.Hash, id [20]byte, port int, extra ...string) string {
	q := "info_hash=" + esc(ih[:]) + "&peer_id=" + esc(id[:]) + "&port=" + strconv.Itoa(port)
	for _, e := range extra {
		q += "&" + e
	}
	return q
}

// fakeClock is a settable clock for tests.
type fakeClock struct{ t time.Time }

func newClock() *fakeClock                   { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }
func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

// reply is a decoded announce reply; Peers keeps its raw form because it
// is a string when compact and a list otherwise.
type reply struct {
	Failure     string             `bencode:"failure reason"`
	Complete    int                `bencode:"complete"`
	Downloaded  int                `bencode:"downloaded"`
	Incomplete  int                `bencode:"incomplete"`
	Interval    int                `bencode:"interval"`
	MinInterval int                `bencode:"min interval"`
	Peers       bencode.RawMessage `bencode:"peers"`
	Peers6      string             `bencode:"peers6"`
}

type dictPeer struct {
	IP     string `bencode:"ip"`
	PeerID string `bencode:"peer id"`
	Port   int    `bencode:"port"`
}

// compactPeers decodes reply.Peers as a compact string.
func (r reply) compactPeers(t *testing.T) []netip.AddrPort {
	t.Helper()
	var s string
	if len(r.Peers) > 0 {
		if err := bencode.Unmarshal(r.Peers, &s); err != nil {
			t.Fatalf("peers is not a string: %v", err)
		}
	}
	out := decodeCompact(t, s, 4)
	return append(out, decodeCompact(t, r.Peers6, 16)...)
}

func decodeCompact(t *testing.T, s string, ipLen int) []netip.AddrPort {
	t.Helper()
	if len(s)%(ipLen+2) != 0 {
		t.Fatalf("compact peers of %d bytes, entry %d", len(s), ipLen+2)
	}
	var out []netip.AddrPort
	for ; s != ""; s = s[ipLen+2:] {
		a, _ := netip.AddrFromSlice([]byte(s[:ipLen]))
		out = append(out, netip.AddrPortFrom(a, uint16(s[ipLen])<<8|uint16(s[ipLen+1])))
	}
	return out
}

// do runs one GET through h from remote with optional headers ("K: v").
func do(t *testing.T, h http.Handler, remote, target string, headers ...string) (reply, []byte) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.RemoteAddr = remote
	for _, hv := range headers {
		k, v, _ := strings.Cut(hv, ": ")
		r.Header.Add(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("GET %s: status %d", target, w.Code)
	}
	if ct := w.Header().Get("Content-Type"); ct != "text/plain" {
		t.Errorf("Content-Type %q", ct)
	}
	body := w.Body.Bytes()
	var rep reply
	if err := bencode.Unmarshal(body, &rep); err != nil {
		t.Fatalf("GET %s: body %q is not a bencoded dictionary: %v", target, body, err)
	}
	return rep, body
}

func escID(n int) string             { id := idN(n); return esc(id[:]) }
func idS(n int) string               { id := idN(n); return string(id[:]) }
func escHash(h metainfo.Hash) string { return esc(h[:]) }
