package tracker

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// maxRedirects bounds the redirects an HTTP announce follows.
const maxRedirects = 5

// HTTPClient announces to and scrapes HTTP(S) trackers. The zero value is
// ready to use; it holds no state of its own between calls, so it may be
// copied and used concurrently.
type HTTPClient struct {
	// Client performs the requests. nil means a fresh client per call with
	// timeouts (15 s dial, 10 s TLS, 30 s headers, 60 s overall), no
	// proxy from the environment and no keep-alive. The engine injects
	// one whose dialer enforces its address policy (SSRF). Whatever the
	// client, its cookie jar is not used and no Authorization is sent.
	Client *http.Client
	// Limits bounds replies; zero fields take their defaults.
	Limits Limits
	// UserAgent is sent when non-empty; empty sends Go's default.
	UserAgent string
}

// Announce sends req to the HTTP(S) tracker at announceURL, keeping any
// query the URL already has, and parses the reply with
// ParseAnnounceResponse.
func (c *HTTPClient) Announce(ctx context.Context, announceURL string, req AnnounceRequest) (AnnounceResponse, error) {
	lim := c.Limits.withDefaults()
	u, err := parseHTTPURL(announceURL)
	if err != nil {
		return AnnounceResponse{}, err
	}
	appendQuery(u, announceQuery(req, lim))
	body, err := c.get(ctx, u, lim)
	if err != nil {
		return AnnounceResponse{}, err
	}
	return ParseAnnounceResponse(body, lim)
}

// Scrape asks the HTTP(S) tracker of announceURL for the counts of up to
// MaxScrapeHashes info-hashes, at the scrape URL derived by ScrapeURL.
// Only requested hashes appear in the result; a hash the tracker does not
// know is absent.
func (c *HTTPClient) Scrape(ctx context.Context, announceURL string, hashes []metainfo.Hash) (map[metainfo.Hash]ScrapeResponse, error) {
	lim := c.Limits.withDefaults()
	if err := checkScrapeHashes(hashes); err != nil {
		return nil, err
	}
	su, err := ScrapeURL(announceURL)
	if err != nil {
		return nil, err
	}
	u, err := parseHTTPURL(su)
	if err != nil {
		return nil, err
	}
	var q strings.Builder
	for i, h := range hashes {
		if i > 0 {
			q.WriteByte('&')
		}
		q.WriteString("info_hash=")
		escapeBytes(&q, h[:])
	}
	appendQuery(u, q.String())
	body, err := c.get(ctx, u, lim)
	if err != nil {
		return nil, err
	}
	all, err := ParseScrapeResponse(body, lim)
	if err != nil {
		return nil, err
	}
	out := make(map[metainfo.Hash]ScrapeResponse, len(hashes))
	for _, h := range hashes {
		if s, ok := all[h]; ok {
			out[h] = s
		}
	}
	return out, nil
}

// ScrapeURL derives the scrape URL of an HTTP(S) announce URL (BEP 48):
// the last path segment must start with "announce", which is replaced by
// "scrape" ("/x/announce.php?k=v" becomes "/x/scrape.php?k=v"). Otherwise
// it returns an error wrapping ErrNoScrape.
func ScrapeURL(announceURL string) (string, error) {
	u, err := parseHTTPURL(announceURL)
	if err != nil {
		return "", err
	}
	p := u.EscapedPath()
	i := strings.LastIndexByte(p, '/')
	seg := p[i+1:]
	if i < 0 || !strings.HasPrefix(seg, "announce") {
		return "", fmt.Errorf("%w: last path segment does not start with \"announce\"", ErrNoScrape)
	}
	p = p[:i+1] + "scrape" + seg[len("announce"):]
	if u.Path, err = url.PathUnescape(p); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoScrape, err)
	}
	u.RawPath = p
	return u.String(), nil
}

// checkScrapeHashes bounds a scrape request.
func checkScrapeHashes(hashes []metainfo.Hash) error {
	if len(hashes) == 0 {
		return errors.New("tracker: scrape needs at least one info-hash")
	}
	if len(hashes) > MaxScrapeHashes {
		return fmt.Errorf("tracker: scrape of %d info-hashes, at most %d per call", len(hashes), MaxScrapeHashes)
	}
	return nil
}

// parseHTTPURL parses an HTTP(S) tracker URL and strips what must never
// be sent: the fragment and any user info (which Go would turn into an
// Authorization header).
func parseHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("tracker: bad url: %w", errors.Unwrap(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedScheme, sanitize(u.Scheme))
	}
	if u.Host == "" {
		return nil, errors.New("tracker: url has no host")
	}
	u.User = nil
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// appendQuery adds q after any query u already has.
func appendQuery(u *url.URL, q string) {
	if u.RawQuery != "" {
		u.RawQuery += "&" + q
	} else {
		u.RawQuery = q
	}
	u.ForceQuery = false
}

// announceQuery encodes req as an HTTP announce query string.
func announceQuery(req AnnounceRequest, lim Limits) string {
	var b strings.Builder
	b.Grow(256)
	b.WriteString("info_hash=")
	escapeBytes(&b, req.InfoHash[:])
	b.WriteString("&peer_id=")
	escapeBytes(&b, req.PeerID[:])
	b.WriteString("&port=")
	b.WriteString(strconv.FormatUint(uint64(req.Port), 10))
	b.WriteString("&uploaded=")
	b.WriteString(strconv.FormatInt(max(req.Uploaded, 0), 10))
	b.WriteString("&downloaded=")
	b.WriteString(strconv.FormatInt(max(req.Downloaded, 0), 10))
	b.WriteString("&left=")
	b.WriteString(strconv.FormatInt(max(req.Left, 0), 10))
	if req.NoCompact {
		b.WriteString("&compact=0")
	} else {
		b.WriteString("&compact=1")
	}
	switch req.Event {
	case Started, Completed, Stopped:
		b.WriteString("&event=")
		b.WriteString(req.Event.String())
	}
	if req.NumWant > 0 {
		b.WriteString("&numwant=")
		b.WriteString(strconv.Itoa(min(req.NumWant, lim.MaxPeers)))
	}
	if req.Key != 0 {
		fmt.Fprintf(&b, "&key=%08X", req.Key)
	}
	if req.TrackerID != "" {
		b.WriteString("&trackerid=")
		escapeBytes(&b, []byte(req.TrackerID))
	}
	return b.String()
}

// escapeBytes percent-encodes raw bytes, leaving only RFC 3986 unreserved
// characters bare. Unlike url.QueryEscape it never writes '+', which some
// trackers do not decode in info_hash.
func escapeBytes(b *strings.Builder, p []byte) {
	const hex = "0123456789ABCDEF"
	for _, c := range p {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
}

// get fetches u and returns at most lim.MaxBody bytes of decoded body.
func (c *HTTPClient) get(ctx context.Context, u *url.URL, lim Limits) ([]byte, error) {
	hc, done := c.httpClient()
	defer done()
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("tracker: %w", err)
	}
	if c.UserAgent != "" {
		r.Header.Set("User-Agent", c.UserAgent)
	}
	resp, err := hc.Do(r)
	if err != nil {
		// A *url.Error repeats the URL, which may hold a passkey; keep the
		// host only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("tracker: get %s://%s: %w", u.Scheme, u.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{StatusCode: resp.StatusCode, Status: sanitize(resp.Status)}
	}
	var body io.Reader = resp.Body
	compressed := !resp.Uncompressed && strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip")
	if !resp.Uncompressed && !compressed && resp.ContentLength > int64(lim.MaxBody) {
		return nil, fmt.Errorf("%w: body larger than %d bytes", ErrBadResponse, lim.MaxBody)
	}
	if compressed {
		// A client with compression disabled still got gzip: decode it
		// here, under the same cap.
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", ErrBadResponse, err)
		}
		defer zr.Close()
		body = zr
	}
	data, err := io.ReadAll(io.LimitReader(body, int64(lim.MaxBody)+1))
	if len(data) > lim.MaxBody {
		return nil, fmt.Errorf("%w: body larger than %d bytes", ErrBadResponse, lim.MaxBody)
	}
	if err != nil {
		return nil, fmt.Errorf("tracker: reading body from %s://%s: %w", u.Scheme, u.Host, err)
	}
	return data, nil
}

// httpClient returns the client for one call, with cookies and
// credentials stripped, and a func to call when the call is done.
func (c *HTTPClient) httpClient() (*http.Client, func()) {
	if c.Client != nil {
		hc := *c.Client
		hc.Jar = nil
		hc.CheckRedirect = stripRedirect(c.Client.CheckRedirect)
		return &hc, func() {}
	}
	tr := &http.Transport{
		Proxy:                  nil, // tbproxy may itself be the environment's proxy
		DialContext:            (&net.Dialer{Timeout: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		DisableKeepAlives:      true,
	}
	hc := &http.Client{
		Transport:     tr,
		Timeout:       60 * time.Second,
		CheckRedirect: stripRedirect(nil),
	}
	return hc, tr.CloseIdleConnections
}

// stripRedirect wraps a CheckRedirect hook: it bounds redirects and makes
// sure a redirect target's user info never becomes an Authorization
// header, then defers to next.
func stripRedirect(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("tracker: stopped after %d redirects", maxRedirects)
		}
		req.URL.User = nil
		req.Header.Del("Authorization")
		req.Header.Del("Cookie")
		if next != nil {
			return next(req, via)
		}
		return nil
	}
}
