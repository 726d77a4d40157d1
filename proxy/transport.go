package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/elazarl/goproxy"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
	"github.com/tbproxy/tbproxy/swarm"
)

// onRequest runs for every proxied request: it refuses loops into the
// proxy itself and, inside an intercepted tunnel, requests for another
// authority than the tunnel's; it strips hop-by-hop headers, and puts the
// negotiating round tripper in place. In a tunnel, every answer bounds
// the wait for the tunnel's next request once it has been sent
// (guardTunnel).
func (p *Proxy) onRequest(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	var tc *trackedConn
	t, inTunnel := ctx.UserData.(tunnel)
	if inTunnel {
		if tc = p.tunnelConn(r); tc != nil {
			tc.requestRead()
			if r.ContentLength == 0 && len(r.TransferEncoding) == 0 && r.Header.Get("Upgrade") == "" {
				// goproxy's context for it never ends while it is answered.
				r = r.WithContext(tc.watchGone(r.Context()))
			}
		}
	}
	chunked := len(r.TransferEncoding) > 0
	if chunked {
		r.Body = clientBody{r.Body}
	}
	if resp := p.refuse(r, t, inTunnel); resp != nil {
		return r, guardTunnel(tc, closeAfterChunked(chunked, resp), p.tunnelIdle)
	}
	if r.Header.Get("Upgrade") == "" {
		// Upgrades (websockets) pass through untouched, Connection and all.
		negotiate.RemoveHopByHop(r.Header)
	}
	if _, ok := r.Header["User-Agent"]; !ok {
		// Go's client would name itself to the origin, and the engine's
		// web seed requests after it: a client that sends no User-Agent
		// reaches the origin with none.
		r.Header["User-Agent"] = []string{""}
	}
	ctx.RoundTripper = goproxy.RoundTripperFunc(func(req *http.Request, ctx *goproxy.ProxyCtx) (*http.Response, error) {
		resp, err := p.roundTrip(req, ctx)
		return guardTunnel(tc, closeAfterChunked(chunked, resp), p.tunnelIdle), err
	})
	return r, nil
}

// closeAfterChunked ends the client's connection after resp when the
// request came with a chunked body (HARDENING 51). Go's server reads such
// a body as chunked even when a Content-Length came with it, and drops
// that header, so the proxy cannot tell the two apart; RFC 9112, section
// 6.3, then requires the connection to close, so that bytes a client
// framed by the Content-Length are never read as a request of their own.
// The request itself goes on chunked only, which no server reads two ways.
func closeAfterChunked(chunked bool, resp *http.Response) *http.Response {
	if chunked && resp != nil {
		resp.Header.Set("Connection", "close")
	}
	return resp
}

// clientBody is the body of a client's chunked request: its read errors
// are marked as the client's (errClientBody), so that a malformed body
// is answered 400 rather than blamed on the origin.
type clientBody struct{ io.ReadCloser }

func (b clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = errClientBody{err}
	}
	return n, err
}

// errClientBody is a failure to read the client's request body.
type errClientBody struct{ err error }

func (e errClientBody) Error() string { return "reading the client's request body: " + e.err.Error() }
func (e errClientBody) Unwrap() error { return e.err }

// refuse returns the proxy's own answer to a request it does not forward:
// one addressed to the proxy itself, one in tunnel t for another
// authority, TRACE and Max-Forwards (maxForwards); nil for the others.
func (p *Proxy) refuse(r *http.Request, t tunnel, inTunnel bool) *http.Response {
	if p.isSelf(hostPort(r.URL)) {
		return textResponse(r, http.StatusLoopDetected, "tbproxy: request addressed to the proxy itself")
	}
	if inTunnel && !sameAuthority(hostPort(r.URL), t.authority) {
		// goproxy takes an intercepted request's URL from its Host header:
		// another host or port there would escape the CONNECT policy.
		p.log.Info("request for another host than its tunnel refused", "tunnel", t.authority, "host", r.URL.Host)
		return textResponse(r, http.StatusMisdirectedRequest, "tbproxy: the request names another host than its CONNECT")
	}
	return maxForwards(r)
}

// maxForwards applies the rules for TRACE and Max-Forwards (RFC 9110,
// sections 9.3.8 and 7.6.2; HARDENING 70). TRACE is refused: its answer
// would reflect the request's headers, credentials and all, to a script
// that could not otherwise read them. An OPTIONS whose Max-Forwards is 0
// is answered by the proxy; a larger one is forwarded with it one less.
// It returns the proxy's own answer, or nil to forward r.
func maxForwards(r *http.Request) *http.Response {
	if r.Method == http.MethodTrace {
		resp := textResponse(r, http.StatusMethodNotAllowed, "tbproxy: TRACE is disabled")
		resp.Header.Set("Allow", proxiedMethods)
		return resp
	}
	v := r.Header.Get("Max-Forwards")
	if r.Method != http.MethodOptions || v == "" {
		return nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 31)
	if err != nil {
		return textResponse(r, http.StatusBadRequest, "tbproxy: Max-Forwards is not a number")
	}
	if n == 0 {
		resp := newResponse(r, http.StatusOK, http.Header{"Allow": {proxiedMethods}, "Content-Length": {"0"}}, http.NoBody, 0)
		return resp
	}
	r.Header.Set("Max-Forwards", strconv.FormatUint(n-1, 10))
	return nil
}

// proxiedMethods are the methods the proxy forwards, for Allow.
const proxiedMethods = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT"

// hostPort is u's host with the scheme's default port made explicit.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// stripped are the request headers taken off the negotiation request: the
// metainfo must come whole, and the client's validators and ranges apply to
// the file we will answer with, not to the metainfo.
var stripped = []string{"Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since"}

// dropForOrigin takes off h, a copy of a client's headers, what a request
// of the proxy's own to the origin must not carry: the client's range and
// validators (stripped), and the client's Via, which the proxy's replaces.
func dropForOrigin(h http.Header) {
	for _, k := range stripped {
		h.Del(k)
	}
	h.Del("Via")
}

// roundTrip is the seam: it sends the negotiation request and, when the
// answer is a torrent, returns a response synthesised from the swarm.
func (p *Proxy) roundTrip(req *http.Request, ctx *goproxy.ProxyCtx) (*http.Response, error) {
	if req.Method == http.MethodHead {
		return p.head(req)
	}
	orig := req.Clone(req.Context())
	injected, hadStripped := p.prepareNegotiation(req)
	if !injected {
		return p.plain(orig)
	}
	p.log.Debug("negotiating", "url", redact(req.URL))
	// A URL of a kind lately answered with metainfo is likely to be so
	// answered too: the origin is asked to confirm its file now (predict.go).
	var early *confirmation
	if p.likelyTorrent(orig.URL) {
		early = p.askEarly(orig)
	}
	var up *upstreamConn
	resp, err := p.send(connOf(req, &up))
	if err != nil {
		p.release(early, false)
		if resp, ok, err := p.offline(orig, err); ok {
			return resp, err
		}
		return p.upstreamFailed(orig, err), nil
	}
	br := bufio.NewReaderSize(resp.Body, negotiate.SniffLen)
	d := negotiate.Decide(resp, true, negotiate.PrefixOf(br, resp.Header))
	if !d.Transform || d.Kind != negotiate.KindMetainfo {
		p.wrongGuess(orig.URL, early)
		early = nil
	}
	switch {
	case d.Refetch:
		resp.Body.Close()
		p.log.Info("torrent answer not used; fetching plainly", "url", redact(req.URL), "why", d.Reason)
		return p.fallback(orig)
	case !d.Transform:
		if hadStripped || acceptRedirect(resp) {
			// Not a torrent, but the client's range or validators were
			// left off to ask for one, or the origin sent the injected
			// Accept elsewhere: ask again as the client did.
			resp.Body.Close()
			return p.fallback(orig)
		}
		p.count(func(t *totals) { t.passed++ })
		return p.passOn(resp, br, up), nil
	case d.Kind == negotiate.KindMagnetLink:
		return p.fromMagnet(orig, resp, br, d.Kind, hadStripped)
	}
	body, err := negotiate.Decoded(br, resp.Header)
	if err != nil {
		p.release(early, false)
		resp.Body.Close()
		p.log.Info("torrent answer not usable; fetching plainly", "url", redact(req.URL), "err", err)
		return p.fallback(orig)
	}
	if d.Kind == negotiate.KindMagnetBody {
		return p.fromMagnet(orig, resp, body, d.Kind, hadStripped)
	}
	// The origin is asked to confirm the file while its metainfo is read,
	// if it was not already, unless its answer says what its plain answer
	// is (confirmFor).
	said := p.plainSaid(orig, resp.Header)
	c := early
	switch {
	case said != nil:
		p.wrongGuess(orig.URL, early)
		c = nil
	case c == nil:
		c = p.askEarly(orig)
	}
	m, idx, err := pickFromAnswer(req.URL, body)
	resp.Body.Close()
	if err != nil {
		p.release(c, false)
		p.log.Info("torrent answer not usable; fetching plainly", "url", redact(req.URL), "err", err)
		return p.fallback(orig)
	}
	if said == nil {
		p.learnKind(orig.URL)
	}
	return p.transform(orig, resp, m, idx, nil, c, said)
}

// acceptRedirect reports whether resp is a redirect chosen by the Accept
// it was asked with (Vary): one the injected Accept may have earned, such
// as a Transparent BitTorrent origin sending torrent-seeking clients to
// its .torrent, which the client, who never asked for a torrent, must not
// follow.
func acceptRedirect(resp *http.Response) bool {
	return resp.StatusCode >= 300 && resp.StatusCode < 400 && negotiate.VariesOn(resp.Header, "Accept")
}

// prepareNegotiation makes req, a GET, the negotiation request: the
// BitTorrent Accept injected (InjectAccept), the client's Range and
// conditionals left off (hadStripped says whether it had any), and Via
// added. When InjectAccept declines, req is left as it was and the request
// is counted as passed: the caller sends the client's own.
func (p *Proxy) prepareNegotiation(req *http.Request) (injected, hadStripped bool) {
	injected, reason := negotiate.InjectAccept(req, negotiate.Config{ExcludeHosts: p.cfg.ExcludeHosts, ExcludeURLs: p.excludedURL})
	if !injected {
		p.count(func(t *totals) { t.passed++ })
		p.log.Debug("passing through", "url", redact(req.URL), "why", reason)
		return false, false
	}
	for _, h := range stripped {
		if req.Header.Get(h) != "" {
			hadStripped = true
			req.Header.Del(h)
		}
	}
	negotiate.AddVia(req.Header, req.ProtoMajor, req.ProtoMinor)
	return true, hadStripped
}

// pickFromAnswer reads the metainfo an origin answered u with, and picks
// the file u names.
func pickFromAnswer(u *url.URL, body io.Reader) (*metainfo.MetaInfo, int, error) {
	m, _, err := negotiate.ReadMetainfo(body)
	if err != nil {
		return nil, 0, err
	}
	idx, err := pickFile(m, u)
	if err != nil {
		return nil, 0, err
	}
	return m, idx, nil
}

// pickFile picks the file of m that u names (negotiate.PickFile), which
// must not be empty.
func pickFile(m *metainfo.MetaInfo, u *url.URL) (int, error) {
	idx, ok := negotiate.PickFile(&m.Info, u)
	if !ok {
		return 0, errors.New("no file in the torrent matches the URL")
	}
	if negotiate.FileSize(&m.Info, idx) <= 0 {
		return 0, errors.New("the file is empty")
	}
	return idx, nil
}

// plain forwards the client's own request.
func (p *Proxy) plain(orig *http.Request) (*http.Response, error) {
	out := orig.Clone(orig.Context())
	negotiate.AddVia(out.Header, out.ProtoMajor, out.ProtoMinor)
	var up *upstreamConn
	resp, err := p.send(connOf(out, &up))
	if err != nil {
		return p.upstreamFailed(orig, err), nil
	}
	return p.passOn(resp, resp.Body, up), nil
}

// passOn readies an origin's answer to go to the client as it came. A 101
// goes as it is: its two-way body and Upgrade fields carry the upgraded
// protocol. Any other loses the fields that describe the origin's
// connection and gains Via (RFC 9110, sections 7.6.1 and 7.6.3), and its
// body, read through r, goes through passBody.
func (p *Proxy) passOn(resp *http.Response, r io.Reader, up *upstreamConn) *http.Response {
	if upgraded(resp) {
		return resp
	}
	negotiate.RemoveHopByHop(resp.Header)
	negotiate.AddVia(resp.Header, resp.ProtoMajor, resp.ProtoMinor)
	if _, ok := resp.Header["Content-Type"]; !ok {
		// Go's server would sniff one from the body (RFC 9110, section
		// 8.3: the recipient may, an intermediary must not add it): the
		// field, present and empty, stops it and is never sent.
		resp.Header["Content-Type"] = nil
	}
	if resp.Body != nil && resp.Body != http.NoBody {
		resp.Body = p.passBody(r, resp, up)
	}
	return resp
}

// upgraded reports whether resp is a 101 whose body is the two-way stream
// of the upgraded protocol.
func upgraded(resp *http.Response) bool {
	_, ok := resp.Body.(io.ReadWriter)
	return ok
}

// fallback is plain, counted as a fallback.
func (p *Proxy) fallback(orig *http.Request) (*http.Response, error) {
	p.count(func(t *totals) { t.fallbacks++ })
	return p.plain(orig)
}

// upstreamFailed answers 502 without passing internal error text on.
func (p *Proxy) upstreamFailed(req *http.Request, err error) *http.Response {
	p.log.Info("upstream failed", "url", redact(req.URL), "err", err)
	status := http.StatusBadGateway
	msg := "tbproxy: the origin could not be reached"
	var ce *tls.CertificateVerificationError
	var be errClientBody
	switch {
	case errors.As(err, &be):
		status, msg = http.StatusBadRequest, "tbproxy: the request body is malformed"
	case errors.Is(err, errForbiddenTarget):
		status, msg = http.StatusForbidden, "tbproxy: destination not allowed"
	case errors.Is(err, errParentRefused):
		msg = "tbproxy: the parent proxy refused the request; check --parent-proxy and its credentials"
	case errors.As(err, &ce):
		msg = "tbproxy: the origin's TLS certificate did not verify"
	}
	return textResponse(req, status, msg)
}

// connectFailed answers a CONNECT whose dial failed as upstreamFailed
// answers a request (403 for a target the policy refuses, else 502),
// never with the internal error text that goproxy's default sends. w is
// the hijacked client connection, or a ResponseWriter; goproxy closes it.
func (p *Proxy) connectFailed(w io.Writer, ctx *goproxy.ProxyCtx, err error) {
	resp := p.upstreamFailed(ctx.Req, err)
	defer resp.Body.Close()
	if rw, ok := w.(http.ResponseWriter); ok {
		maps.Copy(rw.Header(), resp.Header)
		rw.WriteHeader(resp.StatusCode)
		io.Copy(rw, resp.Body)
		return
	}
	resp.Close = true
	resp.Write(w)
}

// transform answers the client with file idx of m, from the swarm. mg is
// the magnet the origin named m by, or nil for metainfo: the peers it
// names (x.pe) are peers of the download too. c is the origin's
// confirmation under way (askEarly), or nil; said is what the origin's
// answer said of its plain answer (plainSaid), or nil.
func (p *Proxy) transform(orig *http.Request, originResp *http.Response, m *metainfo.MetaInfo, idx int, mg *metainfo.Magnet, c *confirmation, said *negotiate.PlainFile) (*http.Response, error) {
	h := negotiate.Headers(m, idx, originResp.Header)
	pl := plan(orig, h, negotiate.FileSize(&m.Info, idx), negotiate.ModTime(m))
	c = p.confirmFor(c, orig, said, m, idx)
	if !pl.stream && !pl.multipart {
		// No body to send (a 304, 412 or 416): the answer is known from
		// the metainfo alone, and no torrent is opened or announced; but
		// only once the torrent is known to describe the origin's file,
		// as for a HEAD (confirmHead). A 304 or 416 about a stale torrent
		// would keep a client's outdated copy, or refuse a range the
		// origin serves.
		why := c.verdict(orig.Context())
		p.release(c, false)
		switch {
		case errors.Is(why, errOriginDiffers):
			return p.originDiffers(orig, why)
		case why != nil:
			return nil, why
		}
		p.transformed(orig, m, idx, mg != nil)
		return pl.response(orig, nil), nil
	}
	if c != nil && isDone(c.differs.Done()) {
		// The origin's own answer disowned the torrent: none is opened.
		p.release(c, false)
		return p.originDiffers(orig, context.Cause(c.differs))
	}
	return p.serve(orig, p.open(orig, m, idx, mg), m, idx, h, pl, c)
}

// openTorrent opens (or joins) the torrent of m and adds its sources: the
// magnet's peers, and the URL the client asked for.
func (p *Proxy) openTorrent(orig *http.Request, m *metainfo.MetaInfo, idx int, mg *metainfo.Magnet) (*swarm.Torrent, error) {
	t, err := p.torrent(m)
	if err != nil {
		return nil, err
	}
	if peers := magnetPeers(mg); len(peers) > 0 {
		t.AddPeers(peers...)
	}
	// The URL the client asked for is always a source of the file, asked
	// for plainly, with the client's own headers.
	seedHeader := orig.Header.Clone()
	dropForOrigin(seedHeader)
	u, ih := *orig.URL, m.InfoHash
	dropped := func(why error) {
		if errors.Is(why, swarm.ErrWrongBytes) {
			p.originBytesDiffer(&u, ih)
			return
		}
		// The origin answers ranges in a way the engine cannot use (a
		// Content-Range other than the one asked for, say), though it may
		// well serve the file plainly. With no other source, nothing will
		// deliver its streams: they fall back now, not when their
		// first-byte budget runs out. This callback runs on the torrent's
		// loop, which Sourceless waits for: it asks on a goroutine.
		p.goFlight(func() {
			if t.Sourceless() {
				p.abortUnsent(u.String(), ih, "nothing but the origin could deliver the torrent's file, and its answers to ranges are unusable", "why", why)
			}
		})
	}
	if err := t.AddWebSeed(swarm.WebSeed{URL: u.String(), Origin: true, File: idx, Header: seedHeader, Dropped: dropped}); err != nil {
		p.log.Debug("origin web seed not added", "err", err)
	}
	// A piece that spans two files of a multi-file torrent needs bytes
	// of a file the URL does not serve: the origin serves the torrent's
	// files side by side, where the URL's path says (FileRoot).
	if root, skip, ok := negotiate.FileRoot(&m.Info, idx, orig.URL); ok {
		if err := t.AddWebSeed(swarm.WebSeed{URL: root, Skip: skip}); err != nil {
			p.log.Debug("the origin's web seed of the torrent's other files not added", "err", err)
		}
	}
	return t, nil
}

// transformed counts and logs a response the swarm will serve.
func (p *Proxy) transformed(orig *http.Request, m *metainfo.MetaInfo, idx int, magnet bool) {
	p.count(func(t *totals) {
		t.transformed++
		if magnet {
			t.magnets++
		}
	})
	attrs := []any{"url", redact(orig.URL), "infohash", m.InfoHash.String(), "file", idx,
		"size", negotiate.FileSize(&m.Info, idx), "app", orig.UserAgent()}
	if rg := orig.Header.Get("Range"); rg != "" {
		if len(rg) > 200 {
			rg = rg[:200] + "…"
		}
		attrs = append(attrs, "range", rg) // slog quotes it: no line breaks reach the log
	}
	p.log.Info("serving from the swarm", attrs...)
}

// isDone reports whether ch is closed.
func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Reseed runs torrent m, which the Store holds, in the engine, unless it
// runs already: with the options and sources a transform gives it, and
// under the same lock, so that a request and the reseeding never open
// its storage twice (the second open would close the handle the first
// gave the engine).
func (p *Proxy) Reseed(m *metainfo.MetaInfo) error {
	_, err := p.torrent(m)
	return err
}

// torrent returns the engine's torrent for m, adding it once: concurrent
// requests for one info-hash share one download.
func (p *Proxy) torrent(m *metainfo.MetaInfo) (*swarm.Torrent, error) {
	p.addMu.Lock()
	defer p.addMu.Unlock()
	if t, ok := p.cfg.Engine.Torrent(m.InfoHash); ok {
		return t, nil
	}
	st, err := p.store.Open(m, false)
	if err != nil {
		return nil, err
	}
	p.rememberSources(m)
	opts := swarm.TorrentOptions{Lazy: true, StallBudget: p.cfg.StallBudget, WebSeedMode: p.cfg.WebSeedMode}
	if p.cfg.PeerSources != nil {
		opts.PeerSources = p.cfg.PeerSources(m)
	}
	return p.cfg.Engine.AddTorrent(m, st, opts)
}

// rememberSources notes a torrent's tracker URLs (announce and scrape),
// which are never negotiated, whoever asks. It goes by URL, not host: an
// origin may well be its own tracker. Web seed URLs are not excluded: they
// are the very URLs clients fetch the files by, and negotiating another
// BitTorrent client's web seed request still answers it with the right
// bytes.
func (p *Proxy) rememberSources(m *metainfo.MetaInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sources == nil {
		p.sources = map[string]bool{}
	}
	add := func(raw string) {
		if u, err := url.Parse(raw); err == nil && u.Host != "" && len(p.sources) < maxSources {
			p.sources[sourceKey(u)] = true
		}
	}
	for _, tier := range m.Trackers() {
		for _, u := range tier {
			add(u)
			if i := strings.LastIndex(u, "/announce"); i >= 0 {
				add(u[:i] + "/scrape" + u[i+len("/announce"):])
			}
		}
	}
}

// sourceKey is host:port and path, lower-cased host.
func sourceKey(u *url.URL) string { return strings.ToLower(hostPort(u)) + u.EscapedPath() }

// maxSources bounds the remembered tracker URLs.
const maxSources = 4096

// excludedURL reports a tracker's URL.
func (p *Proxy) excludedURL(u *url.URL) bool {
	key := sourceKey(u)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sources[key]
}

// handleConnect applies the CONNECT policy: only allowed ports, never the
// proxy itself; MITM when a CA is configured and the host is not excluded.
func (p *Proxy) handleConnect(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	reject := &goproxy.ConnectAction{Action: goproxy.ConnectReject}
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return reject, host
	}
	n, err := strconv.Atoi(port)
	if err != nil || !slices.Contains(p.cfg.ConnectPorts, n) || p.isSelf(host) {
		p.log.Info("CONNECT refused", "host", host)
		ctx.Resp = textResponse(ctx.Req, http.StatusForbidden, "tbproxy: CONNECT to this port or host is not allowed")
		ctx.Resp.Close = true
		return reject, host
	}
	if p.cfg.CA == nil || matchHost(p.cfg.MITMExclude, h) {
		return &goproxy.ConnectAction{Action: goproxy.ConnectAccept}, host
	}
	ca := p.cfg.CA
	ctx.UserData = tunnel{authority: host} // goproxy hands it to each request in the tunnel
	if c := p.tunnelConn(ctx.Req); c != nil {
		c.awaitRequest(p.tunnelHeader) // the handshake and the first request's headers
	}
	return &goproxy.ConnectAction{
		Action: goproxy.ConnectMitm,
		TLSConfig: func(string, *goproxy.ProxyCtx) (*tls.Config, error) {
			// The leaf names the CONNECT authority, whatever SNI says.
			return ca.TLSConfigForHost(h), nil
		},
	}, host
}

// tunnel marks the requests of an intercepted CONNECT tunnel with its
// authority (host:port), in goproxy's ProxyCtx.UserData.
type tunnel struct{ authority string }

// sameAuthority reports whether two host:port values name the same
// authority: host names compared without case or a trailing dot, IP
// addresses by value.
func sameAuthority(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	if ia, err := netip.ParseAddr(ha); err == nil {
		ib, err := netip.ParseAddr(hb)
		return err == nil && ia.Unmap() == ib.Unmap()
	}
	return strings.EqualFold(strings.TrimSuffix(ha, "."), strings.TrimSuffix(hb, "."))
}

// matchHost reports whether host matches an exact name or a *.suffix.
func matchHost(patterns []string, host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range patterns {
		pat = strings.ToLower(pat)
		if suffix, ok := strings.CutPrefix(pat, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == pat {
			return true
		}
	}
	return false
}

// copyBufs are the WriteTo buffers, reused across responses.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// onlyReader hides any WriteTo of the reader, so CopyBuffer uses the buffer.
type onlyReader struct{ io.Reader }

// onlyWriter hides any ReadFrom of the writer, so CopyBuffer uses the buffer.
type onlyWriter struct{ io.Writer }

func textResponse(req *http.Request, status int, msg string) *http.Response {
	body := msg + "\n"
	header := http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "Content-Length": {strconv.Itoa(len(body))}}
	return newResponse(req, status, header, io.NopCloser(strings.NewReader(body)), int64(len(body)))
}

// newResponse is an HTTP/1.1 answer to req that the proxy makes itself.
func newResponse(req *http.Request, status int, header http.Header, body io.ReadCloser, length int64) *http.Response {
	return &http.Response{
		StatusCode:    status,
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          body,
		ContentLength: length,
		Request:       req,
	}
}

// redact keeps credentials and query strings out of logs.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	return c.String()
}
