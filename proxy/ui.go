package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"errors"
	"html/template"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// CacheView is the disk cache as the status page sees it. The proxy does
// not import the cache; cmd/tbproxy adapts it.
type CacheView interface {
	// Usage is the bytes the cache holds on disk and its bound.
	Usage() (used, limit int64)
	// Torrents lists the cached torrents, most recently used first.
	Torrents() []CachedTorrent
	// Drop stops seeding a torrent and deletes it from the cache: an
	// error wrapping ErrNotCached when it is not there, errors.ErrUnsupported
	// when the cache cannot. The proxy never drops a torrent it is
	// streaming.
	Drop(ih metainfo.Hash) error
}

// CachedTorrent describes one cached torrent.
type CachedTorrent struct {
	InfoHash  metainfo.Hash
	Name      string  // from the metainfo: hostile, shown escaped, never used as a path
	Size      int64   // the torrent's length
	DiskBytes int64   // what it occupies on disk
	Verified  float64 // share of its pieces verified, 0 to 1
	Seeding   bool    // the seeding policy still offers it to peers
	Uploaded  int64   // bytes uploaded to peers while cached
	LastUse   time.Time
}

// ErrNotCached is wrapped by CacheView.Drop's error for a torrent the cache
// does not hold.
var ErrNotCached = errors.New("proxy: torrent not in the cache")

// ui is the state behind the status page, /metrics and the totals.
type ui struct {
	tokenOnce sync.Once
	token     string // the CSRF token: random per process, set once

	metricsOnce sync.Once
	metrics     http.Handler // /metrics over this Proxy's own registry; set once

	mu       sync.Mutex
	tracked  map[*swarm.Torrent]*torrentMark // torrents feeding counters; guarded by mu
	counters counters                        // only grow; guarded by mu
	history  []sample                        // a ring of at most historyLen; guarded by mu
	next     int                             // the oldest sample once the ring is full; guarded by mu
	running  bool                            // the sampler was started; guarded by mu
	closed   bool                            // Close ran: no sampler may start; guarded by mu
	wg       sync.WaitGroup                  // the sampler
}

// uiFiles are the page's template, style sheet and script: no build step.
//
//go:embed ui
var uiFiles embed.FS

// pageTemplate is parsed once and never changed.
var pageTemplate = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"bytes":    formatBytes,
	"rate":     formatRate,
	"pct":      formatPercent,
	"ratio":    ratio,
	"permille": func(n, of int64) int64 { return int64(ratio(n, of) * 1000) },
	"runs":     pieceRuns,
	"cells":    func(cells []int) int { return max(len(cells), 1) },
	"split":    split,
	"ago":      func(t time.Time) string { return formatAgo(t, time.Now()) },
	"seeding":  seedingText,
}).ParseFS(uiFiles, "ui/page.html"))

// csrfToken is the token every action must carry. It is made once per
// process, and only the page (same-origin, Host-checked) reveals it.
func (p *Proxy) csrfToken() string {
	p.ui.tokenOnce.Do(func() { p.ui.token = rand.Text() })
	return p.ui.token
}

// pageData is what the page template renders.
type pageData struct {
	Status
	CSRF       string
	Plot       plotView
	CacheRows  []cacheRow
	Blank      TransferStatus // the row the script clones for a new transfer
	BlankCache cacheRow       // and for a newly cached torrent
}

// cacheRow is a cached torrent with the token its drop form carries.
type cacheRow struct {
	CacheTorrentStatus
	CSRF string
}

// servePage renders the status page. It works with scripts off (a refresh
// every 5 s); with them on, ui/app.js polls /status.json and updates it.
func (p *Proxy) servePage(w http.ResponseWriter, r *http.Request) {
	st := p.status(p.snapshot(), true)
	d := pageData{Status: st, CSRF: p.csrfToken(), Plot: plot(st.History, st.Time.UnixMilli())}
	d.BlankCache.CSRF = d.CSRF
	if st.Cache != nil {
		for _, c := range st.Cache.Torrents {
			d.CacheRows = append(d.CacheRows, cacheRow{c, d.CSRF})
		}
	}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		p.log.Error("rendering the status page", "err", err)
		http.Error(w, "tbproxy: the status page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Write(buf.Bytes())
}

// serveAsset serves the page's style sheet and script.
func serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	types := map[string]string{
		"style.css": "text/css; charset=utf-8",
		"app.js":    "text/javascript; charset=utf-8",
	}
	ctype, ok := types[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	b, err := uiFiles.ReadFile("ui/" + name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// dropPath is the action that drops a torrent from the cache.
const dropPath = "/cache/drop"

// maxActionBody bounds an action's form.
const maxActionBody = 4 << 10

// serveDrop drops a torrent from the cache: POST only, from this machine,
// same-origin when the browser says where it comes from, and with the
// CSRF token.
func (p *Proxy) serveDrop(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "tbproxy: method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !loopbackRemote(r) || !sameOrigin(r) {
		http.Error(w, "tbproxy: cross-site request refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxActionBody)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "tbproxy: bad form", http.StatusBadRequest)
		return
	}
	token := r.PostForm.Get("csrf")
	if token == "" {
		token = r.Header.Get("X-CSRF-Token")
	}
	if subtle.ConstantTimeCompare([]byte(token), []byte(p.csrfToken())) != 1 {
		http.Error(w, "tbproxy: missing or wrong CSRF token; reload the page", http.StatusForbidden)
		return
	}
	ih, err := metainfo.ParseHash(r.PostForm.Get("infohash"))
	if err != nil {
		http.Error(w, "tbproxy: bad info-hash", http.StatusBadRequest)
		return
	}
	if p.cfg.Cache == nil {
		http.Error(w, "tbproxy: there is no disk cache", http.StatusNotFound)
		return
	}
	// Hold off new torrents while dropping, so none starts streaming this
	// one between the check and the drop.
	p.addMu.Lock()
	defer p.addMu.Unlock()
	if p.streaming(ih) {
		http.Error(w, "tbproxy: the torrent is being streamed; try again when it ends", http.StatusConflict)
		return
	}
	if err := p.cfg.Cache.Drop(ih); err != nil {
		switch {
		case errors.Is(err, ErrNotCached):
			http.Error(w, "tbproxy: the torrent is not in the cache", http.StatusNotFound)
		case errors.Is(err, errors.ErrUnsupported):
			http.Error(w, "tbproxy: this cache cannot delete torrents yet; the torrent stopped seeding", http.StatusNotImplemented)
		default:
			p.log.Warn("dropping a cached torrent", "infohash", ih.String(), "err", err)
			http.Error(w, "tbproxy: the torrent could not be dropped", http.StatusInternalServerError)
		}
		return
	}
	p.log.Info("dropped a torrent from the cache", "infohash", ih.String())
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// streaming reports a response in flight from torrent ih.
func (p *Proxy) streaming(ih metainfo.Hash) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, tr := range p.transfers {
		if tr.infohash == ih {
			return true
		}
	}
	return false
}

// loopbackRemote reports a request from this machine.
func loopbackRemote(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// sameOrigin checks what the browser says about where a request comes
// from. Origin, then Referer, must name this very host when present; a
// browser that sends Sec-Fetch-Site must call it same-origin. Clients that
// send none of them (curl) pass, and still need the token.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	from := r.Header.Get("Origin")
	if from == "" {
		from = r.Header.Get("Referer")
	}
	if from == "" {
		return true
	}
	u, err := url.Parse(from)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false // "null" among them
	}
	return localHost(u.Host) && strings.EqualFold(u.Host, r.Host)
}

// filePieces is the piece range of the file a transfer serves, found by
// its display path and length; the whole torrent when none matches.
func filePieces(info *metainfo.Info, name string, size int64) metainfo.PieceRange {
	for i, f := range info.Files {
		if !f.Padding() && f.Length == size && f.DisplayPath() == name {
			return info.FilePieces(i)
		}
	}
	return metainfo.PieceRange{Begin: 0, End: info.NumPieces()}
}

// pieceCells bounds the cells of a piece map.
const pieceCells = 200

// pieceMap folds the verified pieces of r, from a BEP 3 bitfield, into at
// most pieceCells cells, each 0 (none verified) to 4 (all).
func pieceMap(bitfield []byte, r metainfo.PieceRange) (cells []int, verified int) {
	n := r.Len()
	if n <= 0 {
		return []int{}, 0
	}
	has := func(i int) bool {
		b := i / 8
		return b < len(bitfield) && bitfield[b]&(0x80>>(i%8)) != 0
	}
	c := min(n, pieceCells)
	cells = make([]int, c)
	for k := range c {
		lo, hi := r.Begin+k*n/c, r.Begin+(k+1)*n/c
		got := 0
		for i := lo; i < hi; i++ {
			if has(i) {
				got++
			}
		}
		verified += got
		switch {
		case got == 0:
			cells[k] = 0
		case got == hi-lo:
			cells[k] = 4
		default:
			cells[k] = 1 + min(2, got*3/(hi-lo))
		}
	}
	return cells, verified
}

// pieceRun is a stretch of equal cells: one SVG rect.
type pieceRun struct{ X, W, Level int }

func pieceRuns(cells []int) []pieceRun {
	var runs []pieceRun
	for i, l := range cells {
		if len(runs) > 0 && runs[len(runs)-1].Level == l {
			runs[len(runs)-1].W++
			continue
		}
		runs = append(runs, pieceRun{X: i, W: 1, Level: l})
	}
	return runs
}

// The plot's drawing area, in SVG units, and the times it spans: the
// history since the first sample, from 5 minutes up to the whole hour.
const (
	plotW       = 600
	plotH       = 120
	plotSpan    = historyLen * historyEvery
	plotMinSpan = 5 * time.Minute
)

// plotView is the totals' history as two SVG polylines.
type plotView struct {
	Swarm, Origin string // points
	Max           int64  // the bytes at the top of the plot
	Span          string // the time it covers, in words
}

// plot draws the history up to now (Unix ms). app.js draws it the same
// way when it updates.
func plot(h []HistorySample, now int64) plotView {
	span := plotSpan.Milliseconds()
	if len(h) > 0 {
		span = min(span, max(now-h[0].Time, plotMinSpan.Milliseconds()))
	}
	v := plotView{Max: 1, Span: spanText(span)}
	start := now - span
	for _, s := range h {
		if s.Time >= start {
			v.Max = max(v.Max, s.FromPeers, s.FromOrigin)
		}
	}
	var sw, or strings.Builder
	for _, s := range h {
		if s.Time < start {
			continue
		}
		x := float64(s.Time-start) / float64(span) * plotW
		point := func(b *strings.Builder, val int64) {
			y := plotH - float64(val)/float64(v.Max)*plotH
			b.WriteString(strconv.FormatFloat(x, 'f', 1, 64) + "," + strconv.FormatFloat(y, 'f', 1, 64) + " ")
		}
		point(&sw, s.FromPeers)
		point(&or, s.FromOrigin)
	}
	v.Swarm, v.Origin = strings.TrimSpace(sw.String()), strings.TrimSpace(or.String())
	return v
}

// spanText words a plot's span of ms milliseconds.
func spanText(ms int64) string {
	if ms >= plotSpan.Milliseconds() {
		return "last hour"
	}
	return "last " + strconv.FormatInt((ms+30_000)/60_000, 10) + " min"
}

// split is the share of a in a+b, in thousandths: the swarm's part of a
// transfer's bytes.
func split(a, b int64) int64 {
	if a+b <= 0 {
		return 0
	}
	return int64(float64(a) / float64(a+b) * 1000)
}

func ratio(n, of int64) float64 {
	if of <= 0 {
		return 0
	}
	return min(1, float64(n)/float64(of))
}

// formatBytes is n in binary units. app.js has the same rules.
func formatBytes(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, unit := float64(n)/1024, "KiB"
	for _, next := range []string{"MiB", "GiB", "TiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, next
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + unit
}

func formatRate(r float64) string { return formatBytes(int64(r)) + "/s" }

func formatPercent(f float64) string {
	return strconv.Itoa(int(math.Floor(max(0, min(1, f))*100))) + "%"
}

// formatAgo is how long before now t was, roughly.
func formatAgo(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + " min ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + " h ago"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + " days ago"
}

// seedingText says what a cached torrent is seeding.
func seedingText(c CacheTorrentStatus) string {
	switch {
	case !c.Seeding:
		return "no (policy done)"
	case !c.Active:
		return "not running"
	case c.Peers == 0:
		return "waiting for peers"
	case c.UploadRate >= 1:
		return strconv.Itoa(c.Peers) + " peers, " + formatRate(c.UploadRate)
	}
	return strconv.Itoa(c.Peers) + " peers"
}

// appName picks the product out of a User-Agent: browsers all begin with
// Mozilla/5.0, so their own token is looked for first.
func appName(ua string) string {
	fields := strings.Fields(ua)
	if len(fields) == 0 {
		return "unknown"
	}
	for _, name := range []string{"Edg/", "OPR/", "Firefox/", "Chrome/", "Safari/"} {
		for _, f := range fields {
			if strings.HasPrefix(f, name) {
				return clip(f, 40)
			}
		}
	}
	return clip(fields[0], 40)
}

// clip cuts s to at most n runes.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
