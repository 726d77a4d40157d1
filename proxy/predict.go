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
// the first byte.
//
// A URL of a kind not seen lately is guessed by its name: a bulky file
// (audio, video, a disk image, an archive, a package; bulkyExts), the
// kind a Transparent BitTorrent origin offers, is asked about at once
// too, so that the first episode of a podcast gains the round trip as
// well. Any other first URL of a kind is not: a page's question would
// cost its origin a second rendering.
//
// A wrong guess costs the origin a one-byte request, and the kind is
// remembered as plain (wrongGuess), so it is not made again within
// kindFor, until a URL of the kind needs the question.
//
// A URL's kind is its scheme, its host and port, and its name's extension
// (kindOf). Only kinds whose metainfo needed the question are learned as
// torrents: an origin that says what its plain answer is (plainSaid) is
// never asked, so its kinds are remembered as plain.

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
	return strings.ToLower(u.Scheme+"://"+hostPort(u)) + " " + extOf(u)
}

// extOf is the extension of u's name, lower-cased: "" when it has none,
// or one longer than maxKindExt.
func extOf(u *url.URL) string {
	ext := path.Ext(u.Path)
	if len(ext) > maxKindExt {
		return ""
	}
	return strings.ToLower(ext)
}

// kindSeen is what the proxy saw of a kind of URL, and when: metainfo
// that needed the origin's confirmation (torrent), or an answer that
// needed none.
type kindSeen struct {
	at      time.Time
	torrent bool
}

// bulkyExts are the extensions of the bulky files that a URL of a kind
// not seen lately is guessed to be offered as a torrent by: audio and
// video, disk images, archives and packages.
var bulkyExts = map[string]bool{
	".mp3": true, ".m4a": true, ".m4b": true, ".aac": true, ".ogg": true, ".oga": true, ".opus": true, ".flac": true, ".wav": true,
	".mp4": true, ".m4v": true, ".mkv": true, ".webm": true, ".mov": true, ".avi": true, ".mpg": true, ".mpeg": true, ".ogv": true,
	".iso": true, ".img": true, ".dmg": true, ".bin": true,
	".zip": true, ".tar": true, ".gz": true, ".tgz": true, ".xz": true, ".bz2": true, ".zst": true, ".7z": true, ".rar": true,
	".deb": true, ".rpm": true, ".apk": true, ".msi": true, ".exe": true, ".pkg": true, ".appimage": true, ".snap": true,
}

// likelyTorrent reports whether u is likely to be answered with metainfo
// that needs the origin's confirmation: a URL of its kind was, within
// kindFor; or, for a kind not seen within kindFor, its name is a bulky
// file's (bulkyExts).
func (p *Proxy) likelyTorrent(u *url.URL) bool {
	if k, ok := p.kinds.Get(kindOf(u)); ok && time.Since(k.at) < kindFor {
		return k.torrent
	}
	return bulkyExts[extOf(u)]
}

// learnKind records that u was answered with metainfo whose file needed
// the origin's confirmation.
func (p *Proxy) learnKind(u *url.URL) {
	p.kinds.Add(kindOf(u), kindSeen{at: time.Now(), torrent: true})
}

// wrongGuess lets go of early, the confirmation asked for u beside its
// negotiation (likelyTorrent), when the origin's answer needs none: no
// metainfo, or metainfo with the origin's word on its plain answer. The
// question ends now, and u's kind is remembered as plain. A nil early was
// no guess.
func (p *Proxy) wrongGuess(u *url.URL, early *confirmation) {
	if early == nil {
		return
	}
	p.release(early, false)
	p.kinds.Add(kindOf(u), kindSeen{at: time.Now()})
	p.log.Debug("asked the origin early, but its answer needs no confirmation; its kind is remembered as plain", "url", redact(u))
}
