package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

// head answers a HEAD with the headers the GET it stands for would get
// (RFC 9110, section 9.3.2): for a URL whose GET tbproxy would answer
// from a torrent, the file's synthesised headers (ETag "bt-…", its
// length, type and date, and Range, If-Range and conditionals answered
// from them), so that a client which learns the validators by HEAD can
// use them with its GETs. No torrent is opened, no peer is asked for a
// magnet's metadata, and nothing is downloaded (HARDENING 60). It asks
// the origin:
//
//  1. the client's HEAD with the BitTorrent Accept (InjectAccept, as for
//     a GET), its Range and conditionals left off as in a negotiation.
//     An answer typed as metainfo, or one whose body a GET could sniff as
//     metainfo (small enough to be a metainfo document, whatever its
//     type), goes on to 2. So does an answer whose Link names a magnet.
//     Any other is the answer, as the GET's would be passed on; unless
//     the client's Range or conditionals were left off, when the
//     client's plain HEAD is asked, as the GET would be asked again.
//  2. the negotiation's GET, for the metainfo itself, or a magnet whose
//     torrent the proxy already knows (a magnet in a Link needs no GET).
//     The torrent's file must be the origin's, judged as for a GET
//     (confirmHead). A GET whose answer is no torrent after all makes the
//     HEAD's answer of 1 the answer (it said what the GET's says). Only
//     an origin that shows another file, metainfo that is not usable, or
//     a magnet whose torrent is unknown makes the answer to the plain
//     HEAD the answer.
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
	resp, err := p.send(connOf(probe, &up))
	if err != nil {
		if resp, ok, err := p.offline(orig, err); ok {
			return resp, err
		}
		return p.upstreamFailed(orig, err), nil
	}
	resp.Body.Close() // a HEAD's answer has none
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	ok := resp.StatusCode == http.StatusOK
	mg, link := negotiate.MagnetLink(resp.Header)
	var out *http.Response
	switch {
	case ok && link && mt != negotiate.MediaType:
		out, err = p.headFromMagnet(orig, resp, mg, negotiate.KindMagnetLink)
	case ok && mt == negotiate.MediaType, ok && mayBeMetainfo(resp):
		out, err = p.headFromTorrent(orig, get)
	case hadStripped || acceptRedirect(resp):
		return p.fallback(orig)
	default:
		p.count(func(t *totals) { t.passed++ })
		return p.passOn(resp, resp.Body, up), nil
	}
	switch {
	case err == nil:
		return out, nil
	case errors.Is(err, errNoTorrent) && !hadStripped:
		p.count(func(t *totals) { t.passed++ })
		return p.passOn(resp, resp.Body, up), nil
	}
	p.log.Info("HEAD not answered from the torrent; asking plainly", "url", redact(orig.URL), "why", err)
	return p.fallback(orig)
}

// errNoTorrent is the negotiation's GET answered with no torrent at all:
// the GET's answer would be passed on, as the HEAD's then is.
var errNoTorrent = errors.New("proxy: the GET's answer names no torrent")

// mayBeMetainfo reports whether resp, an origin's 200 to a HEAD, may stand
// for a body its GET would sniff as metainfo (negotiate.Decide): one of
// unknown length, or no longer than a metainfo document may be.
func mayBeMetainfo(resp *http.Response) bool {
	return resp.ContentLength <= negotiate.MaxMetainfoSize
}

// headFromTorrent fetches the metainfo with get, the negotiation's GET,
// and answers orig, a HEAD, from the torrent when its file is the
// origin's. An answer that is no torrent returns errNoTorrent; a magnet in
// its body is answered by headFromMagnet.
func (p *Proxy) headFromTorrent(orig, get *http.Request) (*http.Response, error) {
	resp, err := p.send(get)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	br := bufio.NewReaderSize(resp.Body, negotiate.SniffLen)
	d := negotiate.Decide(resp, true, negotiate.PrefixOf(br, resp.Header))
	switch {
	case !d.Transform && !d.Refetch:
		return nil, fmt.Errorf("%w (%s)", errNoTorrent, d.Reason)
	case !d.Transform:
		return nil, fmt.Errorf("the GET's answer is a torrent not to use (%s)", d.Reason)
	case d.Kind == negotiate.KindMagnetLink:
		mg, _ := negotiate.MagnetLink(resp.Header) // Decide found it
		return p.headFromMagnet(orig, resp, mg, d.Kind)
	}
	body, err := negotiate.Decoded(br, resp.Header)
	if err != nil {
		return nil, err
	}
	switch {
	case d.Kind == negotiate.KindMagnetBody:
		mg, err := negotiate.ReadMagnet(body)
		if err != nil {
			return nil, err
		}
		return p.headFromMagnet(orig, resp, mg, d.Kind)
	case d.Kind != negotiate.KindMetainfo:
		return nil, fmt.Errorf("the GET's answer is no metainfo to use (%s)", d.Reason)
	}
	m, idx, err := pickFromAnswer(get.URL, body)
	if err != nil {
		return nil, err
	}
	return p.headFrom(orig, resp.Header, m, idx)
}

// headFromMagnet answers orig, a HEAD, from the torrent of mg, named by
// resp (in its body, or in its Link header when kind says so), when the
// proxy already knows that torrent (knownMagnet): a HEAD asks no peer
// for metadata.
func (p *Proxy) headFromMagnet(orig *http.Request, resp *http.Response, mg metainfo.Magnet, kind negotiate.Kind) (*http.Response, error) {
	m := p.knownMagnet(mg.InfoHash)
	if m == nil {
		return nil, errors.New("the magnet's torrent is not known here, and a HEAD asks no peer for it")
	}
	m, err := checkMagnetMeta(m, mg)
	if err != nil {
		return nil, err
	}
	idx, err := magnetFile(m, orig.URL, resp, kind)
	if err != nil {
		return nil, err
	}
	return p.headFrom(orig, resp.Header, m, idx)
}

// headFrom answers orig, a HEAD, from file idx of m, named by an origin's
// answer with headers h, once the file is judged the origin's.
func (p *Proxy) headFrom(orig *http.Request, h http.Header, m *metainfo.MetaInfo, idx int) (*http.Response, error) {
	if err := p.confirmHead(orig, p.plainSaid(orig, h), m, idx); err != nil {
		return nil, err
	}
	size, mod := negotiate.FileSize(&m.Info, idx), negotiate.ModTime(m)
	pl := plan(orig, negotiate.Headers(m, idx, h), size, mod)
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
	ctx, cancel := context.WithTimeout(orig.Context(), confirmTimeout)
	defer cancel()
	resp, err := p.confirmOrigin(ctx, orig)
	switch err := p.judge(url, resp, err, expectedOf(m, idx)); {
	case err == nil:
	case errors.Is(err, errOriginDiffers):
		return err
	default:
		p.log.Info("the origin does not confirm the torrent's file; the HEAD is answered from the torrent", "url", redact(orig.URL), "why", err)
	}
	return nil
}
