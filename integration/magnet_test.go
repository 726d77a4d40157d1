//go:build linux

package integration

// End-to-end tests of origins that answer the BitTorrent negotiation with
// a magnet URI instead of metainfo: in the body, or in a Link header with
// rel="describedby" on the file's own answer. The real tbproxy binary gets
// the metadata from a python3-libtorrent seed (BEP 9) and the file from
// the same seed; curl goes through it. Everything is on 127.0.0.1.

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// magnetOrigin serves files by path. A GET whose Accept lists the torrent
// type is answered as the file's mode says; every other request gets the
// file (a plain Range request, the web seed of the proxy, only when ranges
// is set).
type magnetOrigin struct {
	srv   *httptest.Server
	files map[string]magnetFile // by URL path; read-only once serving

	fileGets   atomic.Int64 // answers carrying a file, any range
	fileBytes  atomic.Int64 // body bytes of those
	negotiated atomic.Int64 // GETs that carried the torrent type
}

// magnetFile is one file of a magnetOrigin.
type magnetFile struct {
	content string // the file on disk
	magnet  string // its magnet URI
	mode    string // "body": the negotiation answer is the magnet; "link": a Link header on every answer
	ranges  bool   // plain Range requests are served
}

func (o *magnetOrigin) serve(w http.ResponseWriter, r *http.Request) {
	f, ok := o.files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Vary", "Accept")
	negotiating := r.Method == http.MethodGet && wantsTorrent(r)
	if negotiating {
		o.negotiated.Add(1)
	}
	switch {
	case negotiating && f.mode == "body":
		w.Header().Set("Content-Type", torrentType)
		io.WriteString(w, f.magnet+"\r\n")
		return
	case f.mode == "link":
		w.Header().Set("Link", `</feed.xml>; rel="alternate", <`+f.magnet+`>; rel="describedby"`)
	}
	if r.Header.Get("Range") != "" && !f.ranges {
		http.Error(w, "no ranges here: the bytes must come from the swarm", http.StatusServiceUnavailable)
		return
	}
	fh, err := os.Open(f.content)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer fh.Close()
	o.fileGets.Add(1)
	w.Header().Set("Content-Type", "audio/mpeg")
	w.Header().Set("ETag", `"origin-file"`)
	http.ServeContent(countingWriter{w, &o.fileBytes}, r, "", time.Time{}, fh)
}

// TestProxyMagnet: the origin answers with a magnet (body, then Link
// header) that names a libtorrent seed by x.pe; curl through tbproxy gets
// the file, byte for byte, from the seed, with the file's type, length and
// the torrent's ETag; /status.json counts the requests as transformed from
// a magnet. Magnets whose peer is gone fall back to plain HTTP within the
// magnet timeout and still deliver.
func TestProxyMagnet(t *testing.T) {
	requireTool(t, "curl")
	requireTool(t, "libtorrent")
	const size = 24 << 20
	// One file per mode, each with its own libtorrent seed, so that each
	// mode fetches its metadata from the seed rather than finding the
	// other's torrent in the proxy's engine.
	type seeded struct {
		data []byte
		meta *metainfo.MetaInfo
		seed *LTPeer
		path string
	}
	modes := map[string]*seeded{}
	for i, mode := range []string{"body", "link"} {
		dir := t.TempDir()
		content := makeContent(t, dir, "episode.mp3", size, int64(9000+i))
		data, err := os.ReadFile(content)
		if err != nil {
			t.Fatal(err)
		}
		torrentPath, m := makeTorrent(t, content, proxyPieceLen, nil)
		seed := startLibtorrent(t, LTOpts{Torrent: torrentPath, SaveDir: dir, Seed: true, SeedMode: true})
		modes[mode] = &seeded{data: data, meta: m, seed: seed, path: content}
	}
	// Another file, whose magnet names a peer that is gone.
	deadDir := t.TempDir()
	deadContent := makeContent(t, deadDir, "episode.mp3", size, 9010)
	deadData, err := os.ReadFile(deadContent)
	if err != nil {
		t.Fatal(err)
	}
	_, deadMeta := makeTorrent(t, deadContent, proxyPieceLen, nil)
	ln, err := net.Listen("tcp", hostPort(0))
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	magnet := func(m *metainfo.MetaInfo, peer string) string {
		mg := m.Magnet()
		mg.Trackers = nil // the peer comes from x.pe alone
		mg.Params = map[string][]string{"x.pe": {peer}}
		return mg.String()
	}
	o := &magnetOrigin{files: map[string]magnetFile{
		"/body/episode.mp3":      {content: modes["body"].path, magnet: magnet(modes["body"].meta, modes["body"].seed.Addr()), mode: "body"},
		"/link/episode.mp3":      {content: modes["link"].path, magnet: magnet(modes["link"].meta, modes["link"].seed.Addr()), mode: "link"},
		"/dead-body/episode.mp3": {content: deadContent, magnet: magnet(deadMeta, dead), mode: "body", ranges: true},
		"/dead-link/episode.mp3": {content: deadContent, magnet: magnet(deadMeta, dead), mode: "link", ranges: true},
	}}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(o.serve))
	o.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	o.srv.Start()
	t.Cleanup(o.srv.Close)

	const magnetTimeout = 3 * time.Second
	p := startTBProxy(t, tbOpts{ui: true, extra: []string{"--magnet-timeout", magnetTimeout.String()}})

	var transformed int64
	for _, mode := range []string{"body", "link"} {
		t.Run(mode, func(t *testing.T) {
			w := modes[mode]
			before := o.fileBytes.Load()
			res := curl(t, p.proxyURL(), o.srv.URL+"/"+mode+"/episode.mp3")
			checkWhole(t, "magnet "+mode, res, w.data, `"bt-`+w.meta.InfoHash.HexString()+`-0"`)
			if res.header.Get("Link") != "" {
				t.Errorf("the origin's Link header reached the client")
			}
			transformed++
			st := p.waitIdle(t)
			if st.Transformed != transformed || st.Magnets != transformed || st.Fallbacks != 0 {
				t.Fatalf("status: %+v\n%s", st, p.proc.Tail(20))
			}
			// A Link answer carries the file, which the proxy stops
			// reading once it has the magnet's torrent; the web seed
			// got no range. So the bytes came from the seed.
			if served := o.fileBytes.Load() - before; served >= size {
				t.Errorf("the origin served %d bytes of a %d-byte file: not a swarm download", served, size)
			}
			if up := seedUploaded(w.seed, size); up < size {
				t.Errorf("the libtorrent seed uploaded %d bytes, want at least %d", up, size)
			}
			t.Logf("curl via a magnet %s: %d bytes in %.2fs, %s", mode, res.bodyLen, res.elapsed, mbps(res.speed))
		})
	}

	for _, mode := range []string{"body", "link"} {
		t.Run("dead-"+mode, func(t *testing.T) {
			before := o.fileGets.Load()
			start := time.Now()
			res := curl(t, p.proxyURL(), o.srv.URL+"/dead-"+mode+"/episode.mp3")
			if res.status != http.StatusOK || !bytes.Equal(res.body, deadData) {
				t.Fatalf("status %d, %d bytes", res.status, len(res.body))
			}
			if res.header.Get("Content-Type") != "audio/mpeg" || res.header.Get("Content-Length") != strconv.Itoa(size) ||
				res.header.Get("ETag") != `"origin-file"` {
				t.Errorf("headers %v", res.header)
			}
			took := time.Since(start)
			if took > magnetTimeout+10*time.Second {
				t.Errorf("the fallback took %v", took)
			}
			// Once either way: a Link answer is the file and passes
			// through; a magnet body is not, and the file is refetched.
			if got := o.fileGets.Load() - before; got != 1 {
				t.Errorf("the origin served the file %d times, want once", got)
			}
			st := p.status(t)
			if st.Transformed != transformed || !strings.Contains(p.proc.Tail(50), "magnet not used") {
				t.Errorf("status %+v\n%s", st, p.proc.Tail(20))
			}
			t.Logf("dead magnet (%s): plain HTTP after %v", mode, took.Round(100*time.Millisecond))
		})
	}
	if st := p.status(t); st.Fallbacks != 2 {
		t.Errorf("status %+v", st)
	}
	if o.negotiated.Load() < 4 {
		t.Errorf("the origin saw %d negotiations, want at least 4", o.negotiated.Load())
	}
}

// seedUploaded waits up to a few seconds for a seed to report at least
// want bytes uploaded, and returns its latest total.
func seedUploaded(seed *LTPeer, want int64) int64 {
	deadline := time.Now().Add(3 * time.Second)
	for {
		up := seed.LastStatus().TotalUpload
		if up >= want || time.Now().After(deadline) {
			return up
		}
		time.Sleep(pollInterval)
	}
}
