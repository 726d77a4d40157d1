package dht

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"time"
)

// Write tokens (BEP 5): a get_peers answer carries a token bound to the
// querier's IP; announce_peer must bring it back. The secret rotates every
// tokenRotate and the previous one is still accepted, so a token is good
// for between 5 and 10 minutes.
const (
	tokenRotate = 5 * time.Minute
	tokenLen    = 8
)

// tokens issues and checks write tokens. It is a plain type; the clock is
// passed in.
type tokens struct {
	cur, prev [32]byte  // the secrets; prev is accepted too
	rotated   time.Time // when cur was made
}

func newTokens(now time.Time) *tokens {
	t := &tokens{rotated: now}
	rand.Read(t.cur[:])
	rand.Read(t.prev[:])
	return t
}

func (t *tokens) rotate(now time.Time) {
	// Rotate in whole steps from the last rotation, so a token expires
	// 10 minutes after the start of the period it was issued in, however
	// rarely we are asked.
	for i := 0; now.Sub(t.rotated) >= tokenRotate; i++ {
		if i == 2 {
			// Both secrets are too old: skip the remaining periods.
			t.rotated = now.Add(-(now.Sub(t.rotated) % tokenRotate))
			break
		}
		t.prev = t.cur
		rand.Read(t.cur[:])
		t.rotated = t.rotated.Add(tokenRotate)
	}
}

func mac(secret [32]byte, ip netip.Addr) string {
	h := hmac.New(sha256.New, secret[:])
	b := ip.Unmap().AsSlice()
	h.Write(b)
	return string(h.Sum(nil)[:tokenLen])
}

// issue returns the token for ip.
func (t *tokens) issue(ip netip.Addr, now time.Time) string {
	t.rotate(now)
	return mac(t.cur, ip)
}

// valid reports whether tok was issued to ip within the last two
// rotations.
func (t *tokens) valid(tok string, ip netip.Addr, now time.Time) bool {
	t.rotate(now)
	return hmac.Equal([]byte(tok), []byte(mac(t.cur, ip))) || hmac.Equal([]byte(tok), []byte(mac(t.prev, ip)))
}
