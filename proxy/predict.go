package proxy

import (
	"net/url"
	"path"
	"strings"
	"time"
)

// A host that answers one URL with metainfo tends to answer the next URL
// of the same kind so too: a podcast's next episode, a mirror's next
// package. For such a URL the origin is asked to confirm the file (see
// confirmOrigin) at once, beside the negotiation, rather than a round
// trip later, once its answer is seen to be metainfo: on a real network
// that takes a round trip, and maybe a new connection's handshakes, off
// the first byte. A wrong guess costs the origin a one-byte request, and
// the kind is forgotten (wrongGuess), so it is not made twice in a row.
//
// A URL's kind is its scheme, its host and port, and its name's extension
// (kindOf). Only kinds whose metainfo needed the question are learned: an
// origin that says what its plain answer is (plainSaid) is never asked.

const (
	// maxKinds bounds the kinds remembered.
	maxKinds = 256
	// kindFor is how long a learned kind is guessed on.
	kindFor = 6 * time.Hour
	// maxKindExt bounds an extension that names a kind: a longer "extension"
	// is a part of a name, and the URL has no kind of its own.
	maxKindExt = 16
)

// kindOf is the kind of u, a key of Proxy.kinds.
func kindOf(u *url.URL) string {
	ext := path.Ext(u.Path)
	if len(ext) > maxKindExt {
		ext = ""
	}
	return strings.ToLower(u.Scheme + "://" + hostPort(u) + " " + ext)
}

// likelyTorrent reports whether a URL of u's kind was answered with
// metainfo within kindFor.
func (p *Proxy) likelyTorrent(u *url.URL) bool {
	at, ok := p.kinds.Get(kindOf(u))
	return ok && time.Since(at) < kindFor
}

// learnKind records that u was answered with metainfo whose file needed
// the origin's confirmation.
func (p *Proxy) learnKind(u *url.URL) {
	p.kinds.Add(kindOf(u), time.Now())
}

// wrongGuess lets go of early, the confirmation asked for u beside its
// negotiation (likelyTorrent), when the origin's answer needs none: no
// metainfo, or metainfo with the origin's word on its plain answer. The
// question ends now, and u's kind is forgotten. A nil early was no guess.
func (p *Proxy) wrongGuess(u *url.URL, early *confirmation) {
	if early == nil {
		return
	}
	p.release(early, false)
	p.kinds.Remove(kindOf(u))
	p.log.Debug("asked the origin early, but its answer needs no confirmation; its kind is forgotten", "url", redact(u))
}
