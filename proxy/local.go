package proxy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// serveLocal answers requests addressed to the proxy itself (origin-form
// requests, not proxied ones): the PAC file, the CA, health and status.
// A proxied request to the proxy's own address never gets here: onRequest
// refuses it as a loop.
func (p *Proxy) serveLocal(w http.ResponseWriter, r *http.Request) {
	if !localHost(r.Host) {
		// A foreign Host on a direct request is DNS rebinding.
		http.Error(w, "tbproxy: unknown host", http.StatusForbidden)
		return
	}
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	// No page of ours may be framed, fetched cross-site or load anything
	// from elsewhere; there are no CORS headers anywhere.
	h.Set("Content-Security-Policy", "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if r.URL.Path == dropPath {
		p.serveDrop(w, r)
		return
	}
	// Everything else only reads: state changes only through POST
	// actions that carry the CSRF token.
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "tbproxy: method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch r.URL.Path {
	case "/healthz":
		fmt.Fprintln(w, "ok")
	case "/proxy.pac":
		w.Header().Set("Content-Type", "application/x-ns-proxy-autoconfig")
		fmt.Fprintf(w, "function FindProxyForURL(url, host) {\n"+
			"  if (isPlainHostName(host) || host == \"localhost\" || shExpMatch(host, \"127.*\")) return \"DIRECT\";\n"+
			"  return \"PROXY %s; DIRECT\";\n}\n", p.pacProxy(r.Host))
	case "/ca.pem":
		if p.cfg.CA == nil {
			http.Error(w, "tbproxy: MITM is off; there is no CA", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(p.cfg.CA.CertPEM())
	case "/status.json":
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(p.status(p.snapshot(), r.URL.Query().Has("history")))
	case "/metrics":
		p.metricsHandler().ServeHTTP(w, r)
	case "/":
		if !loopbackRemote(r) {
			http.Error(w, "tbproxy: the status page is for this machine only", http.StatusForbidden)
			return
		}
		p.servePage(w, r)
	default:
		if name, ok := strings.CutPrefix(r.URL.Path, "/ui/"); ok {
			serveAsset(w, r, name)
			return
		}
		http.NotFound(w, r)
	}
}

// pacProxy is the proxy address a PAC file names: the host the client
// reached us by, with the proxy listener's port (the PAC may be fetched
// from the status listener, whose port is not the proxy's).
func (p *Proxy) pacProxy(reqHost string) string {
	p.mu.Lock()
	ap := p.proxyAddr
	p.mu.Unlock()
	if !ap.IsValid() {
		return reqHost
	}
	host := reqHost
	if h, _, err := net.SplitHostPort(reqHost); err == nil {
		host = h
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(int(ap.Port())))
}

// LocalHandler serves the proxy's own pages (status, PAC, CA, health) for a
// separate status listener, to the clients the proxy itself serves:
// loopback and Config.AllowedClients.
func (p *Proxy) LocalHandler() http.Handler { return p.checkClient(http.HandlerFunc(p.serveLocal)) }

// localHost reports a Host header that names this machine by loopback
// address or localhost: the only names the proxy answers to.
func localHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// Status is what /status.json reports, and what the status page shows.
type Status struct {
	Time        time.Time        `json:"time"`
	Transfers   []TransferStatus `json:"transfers"`
	Transformed int64            `json:"requests_transformed"`
	Passed      int64            `json:"requests_passed_through"`
	Fallbacks   int64            `json:"requests_fallback"`
	// Magnets counts the transformed requests whose torrent the origin
	// named by a magnet URI (body or Link header).
	Magnets     int64 `json:"requests_transformed_from_magnet"`
	BytesServed int64 `json:"bytes_served_from_torrents"`
	// The totals over every torrent the proxy streamed or the cache
	// holds, since the process started.
	FromPeers    int64 `json:"bytes_from_peers_total"`
	FromOrigin   int64 `json:"bytes_from_origin_total"`
	Uploaded     int64 `json:"bytes_uploaded_total"`
	HashFailures int64 `json:"hash_failures_total"`
	Peers        int   `json:"peers"` // connected, over those torrents
	// Cache is nil when the proxy has no disk cache.
	Cache *CacheStatus `json:"cache,omitempty"`
	// History is the totals over the last hour, oldest first, ending now;
	// /status.json includes it when asked (?history).
	History []HistorySample `json:"history,omitempty"`
}

// TransferStatus describes one response being served from the swarm.
type TransferStatus struct {
	ID           int64     `json:"id"`
	App          string    `json:"app"`      // the client's User-Agent
	AppName      string    `json:"app_name"` // the product named in it
	URL          string    `json:"url"`
	InfoHash     string    `json:"infohash"`
	File         string    `json:"file"`
	Size         int64     `json:"size"`
	Sent         int64     `json:"sent"`
	Started      time.Time `json:"started"`
	Progress     float64   `json:"torrent_progress"`
	Peers        int       `json:"peers"`
	DownloadRate float64   `json:"download_rate"`
	FromPeers    int64     `json:"bytes_from_peers"`
	FromOrigin   int64     `json:"bytes_from_origin"`
	// The file's pieces, and a map of them: at most 200 cells, each the
	// share of its pieces verified, from 0 (none) to 4 (all).
	Pieces         int   `json:"pieces"`
	PiecesVerified int   `json:"pieces_verified"`
	PieceMap       []int `json:"piece_map"`
}

// CacheStatus is the disk cache: its use against its bound, and what it
// holds.
type CacheStatus struct {
	Used     int64                `json:"used"`
	Limit    int64                `json:"limit"`
	Torrents []CacheTorrentStatus `json:"torrents"`
}

// CacheTorrentStatus is one cached torrent and what it is seeding.
type CacheTorrentStatus struct {
	InfoHash   string    `json:"infohash"`
	Name       string    `json:"name"`
	Size       int64     `json:"size"`
	DiskBytes  int64     `json:"disk_bytes"`
	Verified   float64   `json:"verified"`
	Seeding    bool      `json:"seeding"` // the seeding policy still offers it
	Active     bool      `json:"active"`  // the engine runs it now
	Peers      int       `json:"peers"`
	UploadRate float64   `json:"upload_rate"`
	Uploaded   int64     `json:"uploaded"`
	LastUse    time.Time `json:"last_use"`
}

// HistorySample is the totals at one moment.
type HistorySample struct {
	Time       int64 `json:"t"` // Unix milliseconds
	FromPeers  int64 `json:"from_peers"`
	FromOrigin int64 `json:"from_origin"`
}

// Status reports the active transfers, the totals and the cache.
func (p *Proxy) Status() Status { return p.status(p.snapshot(), false) }

func (p *Proxy) status(s snapshot, withHistory bool) Status {
	st := Status{
		Time:        s.at,
		Transformed: s.totals.transformed, Passed: s.totals.passed, Fallbacks: s.totals.fallbacks,
		Magnets:      s.totals.magnets,
		BytesServed:  s.totals.served,
		FromPeers:    s.counters.fromPeers,
		FromOrigin:   s.counters.fromOrigin,
		Uploaded:     s.counters.uploaded,
		HashFailures: s.counters.hashFailures,
		Peers:        s.peers,
		Transfers:    []TransferStatus{}, // [] rather than null when idle
	}
	for _, tr := range s.transfers {
		ts := s.stats[tr.torrent]
		rate := ts.WebSeedRate // the origin and other web seeds, then each peer
		for _, peer := range ts.Peers {
			rate += peer.DownloadRate
		}
		sent := tr.sent.Load()
		st.BytesServed += sent
		pr := filePieces(tr.torrent.Info(), tr.File, tr.Size)
		cells, verified := pieceMap(ts.Bitfield, pr)
		st.Transfers = append(st.Transfers, TransferStatus{
			ID: tr.ID, App: tr.App, AppName: appName(tr.App), URL: tr.URL, InfoHash: tr.infohash.String(), File: tr.File, Size: tr.Size,
			Sent: sent, Started: tr.Started, Progress: float64(ts.PiecesVerified) / float64(max(ts.Pieces, 1)),
			Peers: len(ts.Peers), DownloadRate: rate, FromPeers: ts.Downloaded, FromOrigin: ts.FromWebSeeds,
			Pieces: pr.Len(), PiecesVerified: verified, PieceMap: cells,
		})
	}
	if s.hasCache {
		c := &CacheStatus{Used: s.cacheUsed, Limit: s.cacheMax, Torrents: []CacheTorrentStatus{}}
		for _, ct := range s.cached {
			cs := CacheTorrentStatus{
				InfoHash: ct.InfoHash.String(), Name: ct.Name, Size: ct.Size, DiskBytes: ct.DiskBytes,
				Verified: ct.Verified, Seeding: ct.Seeding, Uploaded: ct.Uploaded, LastUse: ct.LastUse,
			}
			if ct.torrent != nil && !isDone(ct.torrent.Done()) {
				ts := s.stats[ct.torrent]
				cs.Active = true
				cs.Peers = len(ts.Peers)
				for _, peer := range ts.Peers {
					cs.UploadRate += peer.UploadRate
				}
			}
			c.Torrents = append(c.Torrents, cs)
		}
		st.Cache = c
	}
	if withHistory {
		for _, h := range p.history() {
			st.History = append(st.History, HistorySample{Time: h.at.UnixMilli(), FromPeers: h.fromPeers, FromOrigin: h.fromOrigin})
		}
		st.History = append(st.History, HistorySample{Time: s.at.UnixMilli(), FromPeers: st.FromPeers, FromOrigin: st.FromOrigin})
	}
	return st
}
