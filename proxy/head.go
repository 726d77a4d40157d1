package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

// head answers a HEAD with the headers the GET it stands for would get
// (RFC 9110, section 9.3.2): for a URL whose GET tbproxy would answer
// from a torrent, the file's synthesised headers (ETag "bt-…", its
// length, type and date, and Range, If-Range and conditionals answered
// from them), so that a client which learns the validators by HEAD can
// use them with its GETs. No torrent is opened and nothing is downloaded
// (HARDENING 60). It asks the origin:
//
//  1. the client's HEAD with the BitTorrent Accept (InjectAccept, as for
//     a GET), its Range and conditionals left off as in a negotiation.
//     An answer typed as metainfo goes on to 2. One that is not is the
//     answer when it is the answer to the client's own request: nothing
//     was left off, and it does not vary on Accept. Otherwise (a HEAD
//     shows no body that could sniff as metainfo) the answer to the
//     client's plain HEAD is.
//  2. the negotiation's GET, for the metainfo itself. The torrent's file
//     must be the origin's, judged as for a GET (confirmHead). Only an
//     origin that shows another file, or metainfo that is not usable,
//     makes the answer to the plain HEAD the answer.
func (p *Proxy) head(req *http.Request) (*http.Response, error) {
	orig := req.Clone(req.Context())
	get := req.Clone(req.Context())
	get.Method = http.MethodGet
	injected, hadStripped := p.prepareNegotiation(get)
	if !injected {
		return p.plain(orig)
	}
	probe := get.Clone(get.Context())
	probe.Method = http.MethodHead
	var up *upstreamConn
	resp, err := p.upstream.RoundTrip(connOf(probe, &up))
	if err != nil {
		return p.upstreamFailed(orig, err), nil
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode == http.StatusOK && mt == negotiate.MediaType:
	case hadStripped:
		resp.Body.Close()
		return p.fallback(orig)
	case resp.StatusCode == http.StatusOK && negotiate.VariesOn(resp.Header, "Accept"):
		resp.Body.Close()
		p.count(func(t *totals) { t.passed++ })
		return p.plain(orig)
	default:
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
// and answers orig, a HEAD, from the torrent when its file is the
// origin's.
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
	if err := p.confirmHead(orig, p.plainSaid(orig, resp.Header), m, idx); err != nil {
		return nil, err
	}
	size, mod := negotiate.FileSize(&m.Info, idx), negotiate.ModTime(m)
	pl := plan(orig, negotiate.Headers(m, idx, resp.Header), size, mod)
	p.count(func(t *totals) { t.transformed++ })
	p.log.Info("answering a HEAD from the torrent", "url", redact(orig.URL), "infohash", m.InfoHash.String(), "file", idx,
		"size", size, "status", pl.status, "app", orig.UserAgent())
	return pl.response(orig, nil), nil
}

// confirmHead judges, as confirmFor does for a GET, whether file idx of m
// is the origin's file, for orig, a HEAD: by what the proxy knows (known),
// else by a confirmation asked now. It returns an error wrapping
// errOriginDiffers when the origin shows another file. A confirmation
// that fails without showing another file does not stop a GET, whose
// headers then wait for verified bytes; nor does it stop the HEAD.
func (p *Proxy) confirmHead(orig *http.Request, said *negotiate.PlainFile, m *metainfo.MetaInfo, idx int) error {
	url := orig.URL.String()
	if decided, _, err := p.known(url, said, m, idx); decided {
		return err
	}
	size, mod := negotiate.FileSize(&m.Info, idx), negotiate.ModTime(m)
	ctx, cancel := context.WithTimeout(orig.Context(), confirmTimeout)
	defer cancel()
	resp, err := p.confirmOrigin(ctx, orig)
	if err == nil {
		err = checkConfirmation(resp, size, mod)
	}
	switch {
	case err == nil:
		p.remember(url, confirmedFile{ih: m.InfoHash, at: time.Now(), asked: true})
	case errors.Is(err, errOriginDiffers):
		return err
	default:
		p.log.Info("the origin does not confirm the torrent's file; the HEAD is answered from the torrent", "url", redact(orig.URL), "why", err)
	}
	return nil
}
