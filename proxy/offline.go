package proxy

import (
	"errors"
	"net"
	"net/http"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

// offline answers orig, a GET or a HEAD whose negotiation could not reach
// the origin (err), from the cache: when the proxy served the URL from a
// torrent (Proxy.confirmed, which Config.URLFile keeps across restarts),
// the origin's bytes did not fail its hashes, and the torrent is whole on
// disk. A cache that is disconnected from the origin may answer with what
// it has (RFC 9111, section 4.2.4); unless the client asks for a fresh
// answer (negotiate.WantsFresh), when it gets the 502 it would get
// without the proxy. ok is false when the cache cannot answer.
func (p *Proxy) offline(orig *http.Request, err error) (resp *http.Response, ok bool, _ error) {
	if !unreachable(err) || negotiate.WantsFresh(orig.Header) {
		return nil, false, nil
	}
	f, known := p.confirmed.Get(orig.URL.String())
	if !known || f.differs {
		return nil, false, nil
	}
	m, whole := p.wholeTorrent(f.ih)
	if !whole {
		return nil, false, nil
	}
	idx, perr := pickFile(m, orig.URL)
	if perr != nil {
		return nil, false, nil
	}
	p.log.Info("the origin cannot be reached; answering from the cache", "url", redact(orig.URL), "infohash", f.ih, "err", err)
	resp, err = p.transform(orig, &http.Response{Header: http.Header{}}, m, idx, nil, nil, nil)
	return resp, true, err
}

// unreachable reports whether err, from a request to an origin, says the
// origin could not be reached at all: its name did not resolve, or no
// connection could be made. A refused destination (the proxy's policy), a
// certificate that does not verify or an answer that broke off is not.
func unreachable(err error) bool {
	if errors.Is(err, errForbiddenTarget) {
		return false
	}
	var dns *net.DNSError
	var op *net.OpError
	return errors.As(err, &dns) || errors.As(err, &op) && op.Op == "dial"
}

// WholeStore is a Store that can tell which torrents it holds whole, and
// give their metainfo: the answer from the cache (Proxy.offline) then
// also serves a torrent the engine does not run, such as one whose
// seeding has ended, or one not yet reseeded after a restart.
type WholeStore interface {
	Store
	Whole(ih metainfo.Hash) (*metainfo.MetaInfo, bool)
}

// wholeTorrent returns the metainfo of torrent ih when its data is whole
// at hand: in a torrent the engine runs, or in the Store (WholeStore).
func (p *Proxy) wholeTorrent(ih metainfo.Hash) (*metainfo.MetaInfo, bool) {
	if t, open := p.cfg.Engine.Torrent(ih); open {
		return t.MetaInfo(), isDone(t.Complete())
	}
	if ws, ok := p.cfg.Store.(WholeStore); ok {
		return ws.Whole(ih)
	}
	return nil, false
}
