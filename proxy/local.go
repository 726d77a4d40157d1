package proxy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
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
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	switch r.URL.Path {
	case "/healthz":
		fmt.Fprintln(w, "ok")
	case "/proxy.pac":
		w.Header().Set("Content-Type", "application/x-ns-proxy-autoconfig")
		fmt.Fprintf(w, "function FindProxyForURL(url, host) {\n"+
			"  if (isPlainHostName(host) || host == \"localhost\" || shExpMatch(host, \"127.*\")) return \"DIRECT\";\n"+
			"  return \"PROXY %s; DIRECT\";\n}\n", r.Host)
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
		enc.Encode(p.Status())
	case "/":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "tbproxy is running.\n\nSet http_proxy=http://%s (or use http://%s/proxy.pac).\nStatus: http://%s/status.json\n", r.Host, r.Host, r.Host)
	default:
		http.NotFound(w, r)
	}
}

// LocalHandler serves the proxy's own pages (status, PAC, CA, health) for a
// separate status listener.
func (p *Proxy) LocalHandler() http.Handler { return http.HandlerFunc(p.serveLocal) }

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

// Status is what /status.json reports.
type Status struct {
	Transfers   []TransferStatus `json:"transfers"`
	Transformed int64            `json:"requests_transformed"`
	Passed      int64            `json:"requests_passed_through"`
	Fallbacks   int64            `json:"requests_fallback"`
	BytesServed int64            `json:"bytes_served_from_torrents"`
}

// TransferStatus describes one response being served from the swarm.
type TransferStatus struct {
	ID           int64     `json:"id"`
	App          string    `json:"app"`
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
}

// Status reports the active transfers and the totals.
func (p *Proxy) Status() Status {
	p.mu.Lock()
	st := Status{Transformed: p.totals.transformed, Passed: p.totals.passed, Fallbacks: p.totals.fallbacks, BytesServed: p.totals.served}
	trs := make([]*transfer, 0, len(p.transfers))
	for _, tr := range p.transfers {
		trs = append(trs, tr)
	}
	p.mu.Unlock()
	sort.Slice(trs, func(i, j int) bool { return trs[i].ID < trs[j].ID })
	for _, tr := range trs {
		ts := tr.torrent.Stats()
		var rate float64
		for _, peer := range ts.Peers {
			rate += peer.DownloadRate
		}
		sent := tr.sent.Load()
		st.BytesServed += sent
		st.Transfers = append(st.Transfers, TransferStatus{
			ID: tr.ID, App: tr.App, URL: tr.URL, InfoHash: tr.infohash.String(), File: tr.File, Size: tr.Size,
			Sent: sent, Started: tr.Started, Progress: float64(ts.PiecesVerified) / float64(max(ts.Pieces, 1)),
			Peers: len(ts.Peers), DownloadRate: rate, FromPeers: ts.Downloaded, FromOrigin: ts.FromWebSeeds,
		})
	}
	return st
}
