package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"time"

	"github.com/tbproxy/tbproxy/negotiate"
)

// head answers a HEAD with the headers the GET it stands for would get
// (RFC 9110, section 9.3.2): for a URL whose GET tbproxy would answer
// from a torrent, the file's synthesised headers (ETag "bt-…", its
// length, type and date, and Range, If-Range and conditionals answered
// from them), so that a client which learns the validators by HEAD can use
// them with its GETs. No torrent is opened and nothing is downloaded
// (HARDENING 60). It asks the origin:
//
//  1. the client's HEAD with the BitTorrent Accept (InjectAccept, as for
//     a GET); an answer that is not typed as metainfo is the answer;
//  2. then the negotiation's GET, for the metainfo itself, and the
//     client's plain HEAD, which shows the origin's file: the torrent's
//     file must be that file (its size, and not modified after the
//     torrent was made), as a GET's confirmation checks. Otherwise, or
//     when the metainfo is not usable, the plain HEAD's answer is the
//     answer.
func (p *Proxy) head(req *http.Request) (*http.Response, error) {
	orig := req.Clone(req.Context())
	get := req.Clone(req.Context())
	get.Method = http.MethodGet
	injected, reason := negotiate.InjectAccept(get, negotiate.Config{ExcludeHosts: p.cfg.ExcludeHosts, ExcludeURLs: p.excludedURL})
	if !injected {
		p.count(func(t *totals) { t.passed++ })
		p.log.Debug("passing through", "url", redact(req.URL), "why", reason)
		return p.plain(orig)
	}
	hadStripped := false
	for _, h := range stripped {
		if get.Header.Get(h) != "" {
			hadStripped = true
			get.Header.Del(h)
		}
	}
	negotiate.AddVia(get.Header, get.ProtoMajor, get.ProtoMinor)
	probe := get.Clone(get.Context())
	probe.Method = http.MethodHead
	var up *upstreamConn
	resp, err := p.upstream.RoundTrip(connOf(probe, &up))
	if err != nil {
		return p.upstreamFailed(orig, err), nil
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); resp.StatusCode != http.StatusOK || mt != negotiate.MediaType {
		if hadStripped {
			resp.Body.Close()
			return p.plain(orig)
		}
		p.count(func(t *totals) { t.passed++ })
		return p.passOn(resp, resp.Body, up), nil
	}
	resp.Body.Close()
	out, err := p.headFromTorrent(orig, get)
	if err != nil {
		p.log.Info("HEAD not answered from the torrent; asking plainly", "url", redact(orig.URL), "why", err)
		return p.fallback(orig)
	}
	return out, nil
}

// headFromTorrent fetches the metainfo with get, the negotiation's GET,
// and the origin's plain answer to orig, a HEAD, and answers orig from the
// torrent when its file is the origin's.
func (p *Proxy) headFromTorrent(orig, get *http.Request) (*http.Response, error) {
	resp, err := p.upstream.RoundTrip(get)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	br := bufio.NewReaderSize(resp.Body, negotiate.SniffLen)
	d := negotiate.Decide(resp, true, negotiate.Prefix(br, resp.Header.Get("Content-Type")))
	if !d.Transform || d.Kind != negotiate.KindMetainfo {
		return nil, fmt.Errorf("the GET's answer is not metainfo to use (%s)", d.Reason)
	}
	m, idx, err := pickFromAnswer(get.URL, br)
	if err != nil {
		return nil, err
	}
	if f, ok := p.confirmed.Get(orig.URL.String()); ok && f.bytesDiffer(m.InfoHash) {
		return nil, errors.New("the origin's bytes failed this torrent's hashes lately")
	}
	size, mod := negotiate.FileSize(&m.Info, idx), negotiate.ModTime(m)
	if said := p.plainSaid(orig, resp.Header); said != nil {
		err = sameFile(said.Size, said.LastModified, size, mod)
	} else {
		err = p.plainHeadShows(orig, size, mod)
	}
	if err != nil {
		return nil, err
	}
	h := negotiate.Headers(m, idx, resp.Header)
	pl := plan(orig, h, size, mod)
	p.count(func(t *totals) { t.transformed++ })
	p.log.Info("answering a HEAD from the torrent", "url", redact(orig.URL), "infohash", m.InfoHash.String(), "file", idx,
		"size", size, "status", pl.status, "app", orig.UserAgent())
	return pl.response(orig, nil), nil
}

// plainHeadShows asks the origin orig, a HEAD, plainly, and checks that
// its answer shows a file of size bytes not modified after mod.
func (p *Proxy) plainHeadShows(orig *http.Request, size int64, mod time.Time) error {
	req := orig.Clone(orig.Context())
	dropForOrigin(req.Header)
	req.Header.Set("Accept-Encoding", "identity")
	negotiate.AddVia(req.Header, req.ProtoMajor, req.ProtoMinor)
	resp, err := p.upstream.RoundTrip(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("its plain HEAD answered %q", resp.Status)
	}
	return checkConfirmation(resp, size, mod)
}
