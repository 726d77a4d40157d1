package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

// DefaultMagnetTimeout is how long the proxy waits for the metadata of a
// magnet an origin answered with, when Config.MagnetTimeout is zero. It is
// well under DefaultFirstByte: the swarm's first byte comes after it.
const DefaultMagnetTimeout = 8 * time.Second

// maxMagnetMetadata caps the info dictionary the proxy accepts from
// peers: the same cap as a metainfo body from an origin. (The engine
// itself refuses anything over its own, larger, BEP 9 cap while
// receiving.)
const maxMagnetMetadata = negotiate.MaxMetainfoSize

// errPrivateMagnet refuses a magnet whose torrent is private (BEP 27):
// its peers may come only from its own trackers, with the credentials of
// whoever the torrent was made for; a proxy that found it through an
// origin's magnet, and its x.pe peers, is neither.
var errPrivateMagnet = errors.New("proxy: the magnet's torrent is private")

// magnetTimeout is Config.MagnetTimeout or its default, never more than
// half the first-byte budget.
func (p *Proxy) magnetTimeout() time.Duration {
	d := p.cfg.MagnetTimeout
	if d <= 0 {
		d = DefaultMagnetTimeout
	}
	return min(d, p.firstByte()/2)
}

// fromMagnet answers orig from a magnet answer of the origin: resp, whose
// body is read through body. kind says where the magnet is (the body, or a
// Link header on the resource's own answer). When the magnet gives a usable
// torrent in time, the file is served as from metainfo. Otherwise the
// client gets plain HTTP: for a Link answer that is resp itself, when the
// client's request went out unchanged but for the Accept (hadStripped
// false), and a plain refetch in every other case.
func (p *Proxy) fromMagnet(orig *http.Request, resp *http.Response, body io.Reader, kind negotiate.Kind, hadStripped bool) (*http.Response, error) {
	passThrough := kind == negotiate.KindMagnetLink && !hadStripped
	notUsed := func(why string, args ...any) (*http.Response, error) {
		p.log.Info("magnet not used; "+why, append([]any{"url", redact(orig.URL)}, args...)...)
		if passThrough {
			p.count(func(t *totals) { t.fallbacks++ })
			return p.passOn(resp, body, nil), nil
		}
		resp.Body.Close()
		return p.fallback(orig)
	}
	var (
		mg  metainfo.Magnet
		err error
	)
	switch kind {
	case negotiate.KindMagnetBody:
		mg, err = negotiate.ReadMagnet(body)
		if err != nil {
			return notUsed("fetching plainly", "err", err)
		}
	case negotiate.KindMagnetLink:
		var ok bool
		if mg, ok = negotiate.MagnetLink(resp.Header); !ok {
			return notUsed("no usable link") // Decide saw one: not reached
		}
	default:
		return notUsed("not a magnet answer")
	}
	if !passThrough {
		// The body is a magnet or must be asked for again anyway: free
		// the origin's connection while peers are asked.
		resp.Body.Close()
	}
	m, err := p.magnetMetadata(orig.Context(), mg)
	if cerr := orig.Context().Err(); cerr != nil {
		resp.Body.Close() // the client left
		return nil, cerr
	}
	if err != nil {
		return notUsed("falling back to plain HTTP", "infohash", mg.InfoHash.String(), "err", err)
	}
	idx, err := magnetFile(m, orig.URL, resp, kind)
	if err != nil {
		return notUsed("falling back to plain HTTP", "infohash", mg.InfoHash.String(), "err", err)
	}
	if passThrough {
		resp.Body.Close()
	}
	return p.transform(orig, resp, m, idx, &mg, nil, p.plainSaid(orig, resp.Header))
}

// magnetFile picks the file of m, a magnet's torrent, that u names: one
// that is not empty and, for a magnet in a Link on the file's own answer
// resp, of the size that answer shows (HARDENING 69: the origin's own
// answer says otherwise; an error wrapping errOriginDiffers).
func magnetFile(m *metainfo.MetaInfo, u *url.URL, resp *http.Response, kind negotiate.Kind) (int, error) {
	idx, err := pickFile(m, u)
	if err != nil {
		return 0, err
	}
	size := negotiate.FileSize(&m.Info, idx)
	if kind == negotiate.KindMagnetLink && resp.ContentLength >= 0 && resp.Header.Get("Content-Encoding") == "" && resp.ContentLength != size {
		return 0, fmt.Errorf("%w: the torrent's file has %d bytes, the origin's %d", errOriginDiffers, size, resp.ContentLength)
	}
	return idx, nil
}

// magnetMetadata turns mg into a torrent: the engine's own when it already
// runs that info-hash, else the metadata fetched from the magnet's peers
// (BEP 9) within magnetTimeout. Concurrent requests for the same magnet
// share one fetch. The fetch is the proxy's, not the first request's: it
// ends at its deadline or when the proxy closes, and a caller whose client
// went away stops waiting for it.
func (p *Proxy) magnetMetadata(ctx context.Context, mg metainfo.Magnet) (*metainfo.MetaInfo, error) {
	if m := p.knownMagnet(mg.InfoHash); m != nil {
		return checkMagnetMeta(m, mg)
	}
	fetch := func() (any, error) {
		// Looked for again: a flight that ended after the look above
		// has remembered its metadata, and fetching it again would only
		// find the seed already connected to that torrent.
		if m := p.knownMagnet(mg.InfoHash); m != nil {
			return m, nil
		}
		fctx, cancel := context.WithTimeout(p.base, p.magnetTimeout())
		defer cancel()
		m, err := p.cfg.Engine.FetchMetadata(fctx, mg)
		if err == nil {
			p.rememberMagnet(m)
		}
		return m, err
	}
	ch := make(chan singleflight.Result, 1) // the waiter may be gone
	started := p.goFlight(func() {
		v, err, shared := p.magnets.Do(mg.String(), fetch)
		ch <- singleflight.Result{Val: v, Err: err, Shared: shared}
	})
	if !started {
		return nil, errProxyClosed
	}
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return checkMagnetMeta(res.Val.(*metainfo.MetaInfo), mg)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// knownMagnet is the metainfo of info-hash ih when the engine runs it or
// a recent fetch remembered it, else nil.
func (p *Proxy) knownMagnet(ih metainfo.Hash) *metainfo.MetaInfo {
	if t, ok := p.cfg.Engine.Torrent(ih); ok {
		return t.MetaInfo()
	}
	return p.recentMagnet(ih)
}

// maxRecentMagnetBytes bounds the info dictionaries kept by
// rememberMagnet, in bytes.
const maxRecentMagnetBytes = 2 * maxMagnetMetadata

// rememberMagnet keeps m, fetched for a magnet, for the requests that ask
// for it before its torrent is in the engine (the fetch they would have
// shared has just ended) or after the engine dropped it. Oldest first out,
// within maxRecentMagnetBytes.
func (p *Proxy) rememberMagnet(m *metainfo.MetaInfo) {
	if len(m.InfoBytes) > maxMagnetMetadata {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, old := range p.recentMagnets {
		if old.InfoHash == m.InfoHash {
			p.recentMagnets = append(p.recentMagnets[:i:i], p.recentMagnets[i+1:]...)
			break
		}
	}
	p.recentMagnets = append(p.recentMagnets, m)
	total := 0
	for _, r := range p.recentMagnets {
		total += len(r.InfoBytes)
	}
	for total > maxRecentMagnetBytes {
		total -= len(p.recentMagnets[0].InfoBytes)
		p.recentMagnets[0] = nil
		p.recentMagnets = p.recentMagnets[1:]
	}
}

// recentMagnet returns the remembered torrent with info-hash ih, or nil.
func (p *Proxy) recentMagnet(ih metainfo.Hash) *metainfo.MetaInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.recentMagnets {
		if m.InfoHash == ih {
			return m
		}
	}
	return nil
}

// checkMagnetMeta applies the proxy's rules to a magnet's torrent.
func checkMagnetMeta(m *metainfo.MetaInfo, mg metainfo.Magnet) (*metainfo.MetaInfo, error) {
	switch {
	case m == nil || m.InfoHash != mg.InfoHash:
		return nil, errors.New("proxy: metadata does not match the magnet")
	case len(m.InfoBytes) > maxMagnetMetadata:
		return nil, fmt.Errorf("proxy: metadata of %d bytes exceeds %d", len(m.InfoBytes), maxMagnetMetadata)
	case m.Info.Private:
		return nil, errPrivateMagnet
	}
	return m, nil
}

// goFlight runs f in a goroutine that Close waits for, unless the proxy is
// closing; it reports whether f was started. f must end soon after p.base
// is cancelled.
func (p *Proxy) goFlight(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.base.Err() != nil {
		return false
	}
	p.flights.Add(1)
	go func() {
		defer p.flights.Done()
		f()
	}()
	return true
}

// maxMagnetPeers bounds the x.pe peers taken from one magnet.
const maxMagnetPeers = 50

// magnetPeers are the x.pe addresses (BEP 9) of mg, if any, at most
// maxMagnetPeers. The engine skips its own address.
func magnetPeers(mg *metainfo.Magnet) []netip.AddrPort {
	if mg == nil {
		return nil
	}
	var out []netip.AddrPort
	for _, pe := range mg.Params["x.pe"] {
		if len(out) == maxMagnetPeers {
			break
		}
		if a, err := netip.ParseAddrPort(pe); err == nil && a.Port() != 0 {
			out = append(out, a)
		}
	}
	return out
}
