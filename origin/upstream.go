package origin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/tbproxy/tbproxy/negotiate"
)

// Defaults for the zero values of UpstreamConfig.
const (
	// DefaultMaxFetch is the largest file fetched when
	// UpstreamConfig.MaxSize is 0.
	DefaultMaxFetch = 16 << 30
	// DefaultFetchers is how many files are fetched at once when
	// UpstreamConfig.Fetchers is 0.
	DefaultFetchers = 2
)

const (
	// maxVersions bounds the upstream versions remembered, by URL path.
	maxVersions = 16 << 10
	// maxFetchQueue bounds the fetches waiting for a fetcher.
	maxFetchQueue = 256
	// headTimeout bounds the HEAD that revalidates a version.
	headTimeout = 10 * time.Second
	// fetchHeaderTimeout bounds the wait for a fetch's response header.
	fetchHeaderTimeout = 30 * time.Second
	// tempPrefix starts the names of files being fetched.
	tempPrefix = ".fetch-"
	// maxValidator is the longest ETag or Last-Modified value a version
	// keeps. Real ETags are tens of bytes and an HTTP-date 29; without a
	// cap each of the maxVersions remembered versions could hold two
	// values as long as the client's response-header limit (10 MB).
	maxValidator = 256
)

// UpstreamConfig configures an Upstream. Every zero field takes the default
// its comment gives.
type UpstreamConfig struct {
	// Upstream is the web server in front of which tbproxy publishes: an
	// http or https URL, optionally with a base path, without query.
	// Required.
	Upstream *url.URL
	// CacheDir holds the fetched copies: one directory per URL path and
	// one file per version, both named by hashes. Required.
	CacheDir string
	// Client talks to the upstream, for proxying, revalidating and
	// fetching. nil means a client that ignores the proxy environment and
	// does not follow redirects; a Client given here should do the same.
	Client *http.Client
	// MinSize is the smallest file fetched and the smallest proxied
	// response given Vary: Accept; 0 means DefaultMinSize and a negative
	// value means any size. Use the Publisher's value.
	MinSize int64
	// MaxSize is the largest file fetched, in bytes; 0 means
	// DefaultMaxFetch.
	MaxSize int64
	// Fetchers is how many files are fetched at once; 0 means
	// DefaultFetchers.
	Fetchers int
	// Revalidate is how long the upstream's answer to a HEAD is trusted
	// for a path before it is asked again; 0 means every negotiating
	// request asks.
	Revalidate time.Duration
	// Logger receives the logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Upstream publishes the files of an existing web server (nginx, Apache).
// Its Handler is the reverse proxy that serves every request the Publisher
// passes on; as the Publisher's Resolver, it fetches each negotiable file
// once into the cache directory, keyed by URL path and the upstream's
// validators (ETag, Last-Modified, Content-Length), and resolves requests to
// that copy. Until a copy is stored, requests pass through to the upstream.
//
// Only what anyone may see is published: no path with a query, a
// response with Cache-Control private or no-store, a Vary beyond Accept and
// Accept-Encoding, a Content-Encoding, no validator at all, or no
// Content-Length. The upstream is always asked without the client's
// headers. A new version (another ETag, Last-Modified or length) is fetched
// anew and older copies are deleted; a torrent still seeding an old copy
// keeps its open file, whose bytes still match it.
type Upstream struct {
	cfg    UpstreamConfig  // defaults applied; immutable
	base   *url.URL        // cfg.Upstream; immutable
	client *http.Client    // immutable
	ownTr  *http.Transport // the transport this Upstream made, closed by Close; nil if given
	proxy  http.Handler    // the reverse proxy; immutable
	ctx    context.Context // cancelled by Close: stops fetches
	cancel context.CancelFunc
	jobs   chan fetchJob               // fetch queue; senders never block
	seen   *lru.Cache[string, version] // last known version per key; safe for concurrent use
	wg     sync.WaitGroup              // the fetchers

	mu       sync.Mutex
	inflight map[string]bool // stored paths queued or being fetched
	closed   bool            // set by Close
}

// version is what the upstream last said about a URL path. Immutable.
type version struct {
	ok         bool   // publishable
	etag       string // as sent, possibly weak
	validators string // ETag, Last-Modified and length: names the version
	lastMod    time.Time
	size       int64
	checked    time.Time
}

type fetchJob struct {
	key  string
	v    version
	dest string
}

// NewUpstream checks cfg, prepares the cache directory (removing fetches
// that a crash interrupted) and starts the fetchers.
func NewUpstream(cfg UpstreamConfig) (*Upstream, error) {
	if cfg.Upstream == nil || (cfg.Upstream.Scheme != "http" && cfg.Upstream.Scheme != "https") || cfg.Upstream.Host == "" ||
		cfg.Upstream.RawQuery != "" || cfg.Upstream.Fragment != "" || cfg.Upstream.User != nil {
		return nil, errors.New("origin: upstream must be an http or https url without query, fragment or user")
	}
	if cfg.CacheDir == "" {
		return nil, errors.New("origin: upstream needs a cache dir")
	}
	switch {
	case cfg.MinSize == 0:
		cfg.MinSize = DefaultMinSize
	case cfg.MinSize < 0:
		cfg.MinSize = 0
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxFetch
	}
	if cfg.Fetchers <= 0 {
		cfg.Fetchers = DefaultFetchers
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	abs, err := filepath.Abs(cfg.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("origin: cache dir: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("origin: cache dir: %w", err)
	}
	if cfg.CacheDir, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, fmt.Errorf("origin: cache dir: %w", err)
	}
	removeTemps(cfg.CacheDir)
	seen, err := lru.New[string, version](maxVersions)
	if err != nil {
		return nil, fmt.Errorf("origin: upstream: %w", err)
	}
	u := &Upstream{
		cfg:      cfg,
		base:     cfg.Upstream,
		client:   cfg.Client,
		jobs:     make(chan fetchJob, maxFetchQueue),
		seen:     seen,
		inflight: make(map[string]bool),
	}
	if u.client == nil {
		u.ownTr = &http.Transport{
			Proxy:                 nil, // never through the environment's proxy
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
		u.client = &http.Client{
			Transport:     u.ownTr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	tr := u.client.Transport
	if tr == nil {
		tr = http.DefaultTransport
	}
	u.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u.base)
			pr.SetXForwarded()
		},
		Transport:      tr,
		ModifyResponse: u.modifyResponse,
		ErrorHandler:   u.proxyError,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	for range cfg.Fetchers {
		u.wg.Go(u.fetcher)
	}
	return u, nil
}

// ownLocation rewrites a Location that points into the upstream (an
// upstream's absolute redirects name itself, from the Host the proxy sent
// it) as an absolute path on the publisher, which clients resolve against
// the URL they asked, as nginx's proxy_redirect default does: a client
// that follows it stays with the publisher and its torrents.
func (u *Upstream) ownLocation(h http.Header) {
	loc, err := url.Parse(h.Get("Location"))
	if err != nil || !loc.IsAbs() || !strings.EqualFold(loc.Scheme, u.base.Scheme) || !sameServer(loc, u.base) {
		return
	}
	base := strings.TrimSuffix(u.base.EscapedPath(), "/")
	rest, ok := strings.CutPrefix(loc.EscapedPath(), base)
	if !ok || rest != "" && rest[0] != '/' || strings.HasPrefix(rest, "//") {
		return // "//host/…" alone would name another host
	}
	if rest == "" {
		rest = "/"
	}
	own := &url.URL{Path: rest, RawQuery: loc.RawQuery, Fragment: loc.Fragment}
	if p, err := url.PathUnescape(rest); err == nil {
		own.Path, own.RawPath = p, rest
	}
	h.Set("Location", own.String())
}

// sameServer reports whether a and b, of one scheme, name the same host
// (in any case) and port, a missing port being the scheme's default: nginx
// leaves :80 and :443 out of its redirects.
func sameServer(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if strings.EqualFold(u.Scheme, "https") {
			return "443"
		}
		return "80"
	}
	return strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

// Handler is the reverse proxy to the upstream: the handler the Publisher
// wraps. It adds Vary: Accept to a GET or HEAD answered 200 or 206 with a
// representation of at least MinSize bytes, and to a 304 for one, unless the
// Publisher did.
// Upstream failures answer 502 without detail.
func (u *Upstream) Handler() http.Handler { return u.proxy }

// Close stops the fetchers, abandoning fetches in progress, and returns
// once they have ended.
func (u *Upstream) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	u.mu.Unlock()
	u.cancel()
	u.wg.Wait()
	if u.ownTr != nil {
		u.ownTr.CloseIdleConnections()
	}
	return nil
}

func (u *Upstream) setsVary() {}

// Resolve implements Resolver. Only a negotiating request (fetch) is
// resolved: it asks the upstream (a HEAD, at most once per Revalidate)
// which version is current, and answers with the stored copy of that
// version, or queues its fetch and answers not ok. An upstream that cannot
// answer (unreachable, or a 5xx) leaves the version it said last standing,
// so that a copy stored here is still published, and seeded, while it is
// down; it is asked again at the next request.
func (u *Upstream) Resolve(r *http.Request, fetch bool) (Resource, bool) {
	if !fetch || r.URL.RawQuery != "" || r.URL.RawPath != "" {
		return Resource{}, false
	}
	key, ok := cleanKey(r.URL.Path)
	if !ok {
		return Resource{}, false
	}
	v, known := u.seen.Get(key)
	if !known || u.cfg.Revalidate <= 0 || u.cfg.Now().Sub(v.checked) >= u.cfg.Revalidate {
		cur, status, err := u.head(r.Context(), key)
		switch {
		case (err != nil || status >= 500) && known && v.ok:
			u.cfg.Logger.Debug("upstream cannot say which version is current; the last one it said stands", "key", key, "status", status, "err", err)
		case err != nil:
			u.cfg.Logger.Debug("upstream head failed", "key", key, "err", err)
			return Resource{}, false
		default:
			v = cur
			u.seen.Add(key, v)
		}
	}
	if !v.ok {
		return Resource{}, false
	}
	dest := u.storedPath(key, v)
	if res, ok := stored(key, dest, v.size); ok {
		return res, true
	}
	u.enqueue(fetchJob{key: key, v: v, dest: dest})
	return Resource{}, false
}

// Check implements Resolver: res must be a stored copy in the cache
// directory, in the place of its key, unchanged.
func (u *Upstream) Check(res Resource) bool {
	if key, ok := cleanKey(res.Key); !ok || key != res.Key {
		return false
	}
	if filepath.Dir(filepath.Dir(res.Path)) != u.cfg.CacheDir || filepath.Base(filepath.Dir(res.Path)) != keyDir(res.Key) {
		return false
	}
	cur, ok := stored(res.Key, res.Path, res.Size)
	return ok && sameVersion(cur, res)
}

// target is the upstream URL of key.
func (u *Upstream) target(key string) string {
	t := *u.base
	t.Path = strings.TrimSuffix(t.Path, "/") + key
	t.RawPath = ""
	return t.String()
}

// head asks the upstream, without any of the client's headers, what the
// current version of key is, and the status of its answer.
func (u *Upstream) head(ctx context.Context, key string) (version, int, error) {
	ctx, cancel := context.WithTimeout(ctx, headTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u.target(key), nil)
	if err != nil {
		return version{}, 0, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := u.client.Do(req)
	if err != nil {
		return version{}, 0, err
	}
	resp.Body.Close()
	v := u.versionOf(resp)
	v.checked = u.cfg.Now()
	return v, resp.StatusCode, nil
}

// versionOf reads the version a 200 response describes, and whether it may
// be published.
func (u *Upstream) versionOf(resp *http.Response) version {
	return parseVersion(resp.StatusCode, resp.Header, u.cfg.MinSize, u.cfg.MaxSize)
}

// parseVersion reads the version that a response with status and header h
// describes, and whether it may be published: status 200, a Content-Length
// (see contentLength) of at least one byte, at least minSize and at most
// maxSize, an ETag or a Last-Modified date, and public(h).
//
// An ETag or Last-Modified value over maxValidator bytes or holding a
// control byte makes the response unpublishable, and neither value is then
// kept. Treating only the bad value as absent would not be safe: the
// version would be named by fewer validators than the upstream uses (two
// versions with the same date and length but different ETags would look
// the same), and the fetch would lose its If-Match.
func parseVersion(status int, h http.Header, minSize, maxSize int64) version {
	etag, lm := h.Get("Etag"), h.Get("Last-Modified")
	usable := validatorOK(etag) && validatorOK(lm)
	if !usable {
		etag, lm = "", ""
	}
	v := version{etag: etag, size: -1}
	if n, ok := contentLength(h); ok {
		v.size = n
	}
	if t, err := http.ParseTime(lm); err == nil {
		v.lastMod = t
	}
	v.validators = v.etag + "\n" + lm + "\n" + strconv.FormatInt(v.size, 10)
	v.ok = usable && status == http.StatusOK && v.size > 0 && v.size >= minSize && v.size <= maxSize &&
		(v.etag != "" || !v.lastMod.IsZero()) && public(h)
	return v
}

// validatorOK reports whether an ETag or Last-Modified value (possibly
// empty) may name a version: at most maxValidator bytes and no control
// byte, which neither an entity-tag nor an HTTP-date may hold and which
// would make the newline-separated validators ambiguous.
func validatorOK(s string) bool {
	if len(s) > maxValidator {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// contentLength returns the value of h's Content-Length, which must appear
// exactly once and be 1 to 19 ASCII digits whose value fits an int64.
// strconv.ParseInt would also take a sign ("+5"); spaces are refused too.
// Go's HTTP/1 transport refuses such a response, but its HTTP/2 transport
// leaves an invalid value in the header map (and sets resp.ContentLength
// to -1), so the value is checked here.
//
// The header is read rather than resp.ContentLength, to which it is equal
// for a valid value on Go's transports, because the version must be a
// function of the header alone: the HEAD that names a version and the GET
// that fetches it must give the same answer whatever RoundTripper the
// configured Client uses, and modifyResponse must decide as versionOf does.
func contentLength(h http.Header) (int64, bool) {
	vals := h["Content-Length"]
	if len(vals) != 1 {
		return 0, false
	}
	return negotiate.ParseDigits(vals[0])
}

// public reports whether a response may be shared with anyone: no private
// or no-store, no content coding, and no Vary beyond Accept-Encoding and
// Accept (the copy is fetched with neither).
func public(h http.Header) bool {
	for _, line := range h["Cache-Control"] {
		for d := range strings.SplitSeq(line, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(d), "=")
			if strings.EqualFold(name, "private") || strings.EqualFold(name, "no-store") {
				return false
			}
		}
	}
	for _, line := range h["Content-Encoding"] {
		if ce := strings.TrimSpace(line); ce != "" && !strings.EqualFold(ce, "identity") {
			return false
		}
	}
	for _, line := range h["Vary"] {
		for f := range strings.SplitSeq(line, ",") {
			f = strings.TrimSpace(f)
			if f != "" && !strings.EqualFold(f, "Accept-Encoding") && !strings.EqualFold(f, "Accept") {
				return false
			}
		}
	}
	return true
}

// keyDir names the directory of a key's copies.
func keyDir(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:16])
}

// storedPath names the copy of one version of key.
func (u *Upstream) storedPath(key string, v version) string {
	s := sha256.Sum256([]byte(key + "\x00" + v.validators))
	return filepath.Join(u.cfg.CacheDir, keyDir(key), hex.EncodeToString(s[:16]))
}

// stored returns the copy at file when it is a whole regular file of size
// bytes.
func stored(key, file string, size int64) (Resource, bool) {
	st, err := os.Lstat(file)
	if err != nil || !st.Mode().IsRegular() || st.Size() != size {
		return Resource{}, false
	}
	return fileResource(key, file, st), true
}

func (u *Upstream) enqueue(j fetchJob) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed || u.inflight[j.dest] {
		return
	}
	select {
	case u.jobs <- j:
		u.inflight[j.dest] = true
	default:
		u.cfg.Logger.Warn("upstream fetch queue full", "key", j.key)
	}
}

func (u *Upstream) fetcher() {
	for {
		select {
		case <-u.ctx.Done():
			return
		case j := <-u.jobs:
			if err := u.fetch(j); err != nil && u.ctx.Err() == nil {
				u.cfg.Logger.Warn("upstream fetch failed", "key", j.key, "err", err)
			}
			u.mu.Lock()
			delete(u.inflight, j.dest)
			u.mu.Unlock()
		}
	}
}

// fetch stores one version of a file: streamed to a temporary file in its
// key's directory, renamed into place once whole, older versions deleted.
func (u *Upstream) fetch(j fetchJob) error {
	ctx, cancel := context.WithCancel(u.ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.target(j.key), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept-Encoding", "identity")
	if j.v.etag != "" && !strings.HasPrefix(j.v.etag, "W/") {
		req.Header.Set("If-Match", j.v.etag)
	}
	slow := time.AfterFunc(fetchHeaderTimeout, cancel)
	resp, err := u.client.Do(req)
	slow.Stop()
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if got := u.versionOf(resp); !got.ok || got.validators != j.v.validators {
		return fmt.Errorf("origin: upstream answered %d with another version", resp.StatusCode)
	}
	dir := filepath.Dir(j.dest)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return err
	}
	n, err := io.Copy(tmp, io.LimitReader(resp.Body, j.v.size+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != j.v.size {
		err = fmt.Errorf("origin: upstream sent %d bytes of %d", n, j.v.size)
	}
	if err == nil {
		mtime := j.v.lastMod
		if mtime.IsZero() {
			mtime = u.cfg.Now()
		}
		err = os.Chtimes(tmp.Name(), mtime, mtime)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), j.dest)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		if name := de.Name(); name != filepath.Base(j.dest) && !strings.HasPrefix(name, tempPrefix) {
			os.Remove(filepath.Join(dir, name))
		}
	}
	u.cfg.Logger.Info("fetched from upstream", "key", j.key, "size", n)
	return nil
}

// removeTemps deletes the temporary files of fetches a crash interrupted.
func removeTemps(root string) {
	dirs, _ := os.ReadDir(root)
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		files, _ := os.ReadDir(filepath.Join(root, d.Name()))
		for _, f := range files {
			if strings.HasPrefix(f.Name(), tempPrefix) {
				os.Remove(filepath.Join(root, d.Name(), f.Name()))
			}
		}
	}
}

// modifyResponse adds Vary: Accept to large GET and HEAD answers, which the
// Publisher would negotiate, and to 304s for them, unless it already added it.
func (u *Upstream) modifyResponse(resp *http.Response) error {
	u.ownLocation(resp.Header)
	req := resp.Request
	if req == nil || varyAdded(req.Context()) || (req.Method != http.MethodGet && req.Method != http.MethodHead) {
		return nil
	}
	size := int64(-1)
	switch resp.StatusCode {
	case http.StatusOK:
		// Parsed as versionOf does: a length it refuses ("+5") would not be
		// negotiated, so it needs no Vary: Accept.
		if n, ok := contentLength(resp.Header); ok {
			size = n
		}
	case http.StatusPartialContent:
		if _, _, total, err := negotiate.ParseContentRange(resp.Header.Get("Content-Range")); err == nil {
			size = total
		}
	case http.StatusNotModified:
		// A 304 carries the Vary its 200 would (RFC 9110 §15.4.5), but
		// not its length: the version last seen of the path has it. With
		// none seen, Vary: Accept is added; it costs a cache no more than
		// a finer key.
		size = max(u.cfg.MinSize, 1)
		if key, ok := cleanKey(req.URL.Path); ok {
			if v, known := u.seen.Peek(key); known {
				size = v.size
			}
		}
	}
	if size > 0 && size >= u.cfg.MinSize {
		addVaryAccept(resp.Header)
	}
	return nil
}

func (u *Upstream) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if !errors.Is(err, context.Canceled) {
		u.cfg.Logger.Warn("upstream request failed", "path", r.URL.Path, "err", err)
	}
	http.Error(w, "bad gateway", http.StatusBadGateway)
}
