//go:build linux

package integration

// End-to-end tests of `tbproxy publish` and `tbproxy tracker` (issue #7):
// the real binary serves a directory as a Transparent BitTorrent origin
// (metainfo on negotiation, its own tracker, seeding), and real clients
// (tbproxy proxies with curl, aria2, python3-libtorrent) download from
// it. Everything listens on 127.0.0.1.
//
// What the publisher sends is measured from outside: the wchar counter of
// /proc/PID/io counts every byte the process hands to write(2), writev(2)
// and sendfile(2), so it covers the BitTorrent uploads of its engine and
// the file bytes its HTTP server sends (web seeds, plain GETs) alike. Its
// own log lines and metainfo files are a few kilobytes on top.

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

const (
	// pubReadyTimeout bounds the wait for a published file's metainfo
	// (hashing is lazy) and for other state the publisher reaches by
	// itself.
	pubReadyTimeout = 30 * time.Second
	// pubTransfer bounds one download by a third-party client.
	pubTransfer = 60 * time.Second
	// pubMaxNumWant is tracker/server.MaxNumWant, the most peers one
	// reply may carry.
	pubMaxNumWant = 200
)

// pubLogLevel is the level of the tbproxy processes here; TBPROXY_DEBUG=1
// turns on debug logs, as for startTBProxy.
func pubLogLevel() string {
	if os.Getenv("TBPROXY_DEBUG") != "" {
		return "debug"
	}
	return "info"
}

// startReadyProc starts the tbproxy binary with args and returns once it
// prints a line starting with ready (after every listener is bound),
// failing the test if it exits first or takes longer than startTimeout.
func startReadyProc(t testing.TB, ready string, args ...string) *proc {
	t.Helper()
	seen := make(chan struct{})
	var once sync.Once
	p := startProcWith(t, procConfig{onLine: func(line string) {
		if strings.HasPrefix(line, ready) {
			once.Do(func() { close(seen) })
		}
	}}, tbproxyBinary(t), args...)
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-seen:
	case <-p.Done():
		t.Fatalf("tbproxy %s exited (%s) before it was ready:\n%s", args[0], p.state(), p.Tail(50))
	case <-timer.C:
		t.Fatalf("tbproxy %s not ready within %v:\n%s", args[0], startTimeout, p.Tail(50))
	}
	return p
}

// publisher is a running `tbproxy publish`.
type publisher struct {
	proc *proc
	addr string // 127.0.0.1:PORT, HTTP and the UDP tracker
	url  string // http://addr
}

// startPublisher publishes dir with its own port, peer port and data
// directory; extra flags come last.
func startPublisher(t testing.TB, dir string, extra ...string) *publisher {
	t.Helper()
	p := &publisher{addr: hostPort(freeTCPUDPPort(t))}
	p.url = "http://" + p.addr
	args := []string{"publish",
		"--dir", dir,
		"--listen", p.addr,
		"--peer-listen", hostPort(0),
		"--data-dir", t.TempDir(),
		"--log-level", pubLogLevel(),
	}
	p.proc = startReadyProc(t, "tbproxy publish is serving", append(args, extra...)...)
	return p
}

// written returns how many bytes the publisher has written so far:
// sockets (BitTorrent and HTTP, sendfile included), logs and files.
func (p *publisher) written(t testing.TB) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p.proc.PID()))
	if err != nil {
		t.Fatalf("reading the publisher's I/O counters: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("wchar %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("no wchar in /proc/%d/io: %q", p.proc.PID(), data)
	return 0
}

// negotiate asks for path with Accept: application/x-bittorrent through
// curl (no proxy) and returns curl's result; the body is kept.
func (p *publisher) negotiate(t testing.TB, path string) curlResult {
	t.Helper()
	res, err := runCurl(t.Context(), toolEnv(t), t.TempDir(), "", p.url+path, true, "-H", "Accept: "+torrentType)
	if err != nil {
		t.Fatalf("negotiating %s: %v\n%s", path, err, p.proc.Tail(20))
	}
	return res
}

// waitMetainfo negotiates path until the answer is metainfo that ok
// accepts (nil accepts any): the publisher hashes lazily, so the first
// answers may be the plain file. It returns the parsed metainfo and its
// bytes.
func (p *publisher) waitMetainfo(t testing.TB, path string, ok func(*metainfo.MetaInfo) bool) (*metainfo.MetaInfo, []byte) {
	t.Helper()
	deadline := time.Now().Add(pubReadyTimeout)
	plain := 0
	for {
		res := p.negotiate(t, path)
		if res.status == http.StatusOK && strings.HasPrefix(res.header.Get("Content-Type"), torrentType) {
			m, err := metainfo.Parse(res.body)
			if err != nil {
				t.Fatalf("the publisher's metainfo for %s does not parse: %v", path, err)
			}
			if ok == nil || ok(m) {
				if plain > 0 {
					t.Logf("%s: metainfo after %d plain answers", path, plain)
				}
				return m, res.body
			}
		} else {
			plain++
		}
		if time.Now().After(deadline) {
			t.Fatalf("no (new) metainfo for %s within %v; last answer %d %q\n%s",
				path, pubReadyTimeout, res.status, res.header.Get("Content-Type"), p.proc.Tail(30))
		}
		select {
		case <-p.proc.Done():
			t.Fatalf("the publisher exited (%s):\n%s", p.proc.state(), p.proc.Tail(50))
		case <-time.After(pollInterval):
		}
	}
}

// checkPieces fails unless m describes exactly the bytes of the file at
// path: same length, and every piece hash matches.
func checkPieces(t testing.TB, m *metainfo.MetaInfo, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if m.Info.TotalLength != int64(len(data)) {
		t.Fatalf("metainfo length %d, the file has %d bytes", m.Info.TotalLength, len(data))
	}
	if m.Info.NumPieces() != (len(data)+int(m.Info.PieceLength)-1)/int(m.Info.PieceLength) {
		t.Fatalf("%d pieces of %d bytes for a %d-byte file", m.Info.NumPieces(), m.Info.PieceLength, len(data))
	}
	for i := range m.Info.NumPieces() {
		off := int64(i) * m.Info.PieceLength
		sum := sha1.Sum(data[off : off+m.Info.PieceLen(i)])
		if metainfo.Hash(sum) != m.Info.PieceHash(i) {
			t.Fatalf("piece %d of the metainfo does not match the file", i)
		}
	}
}

// settledSameFile is sameFile for a file a libtorrent leech has just
// finished: libtorrent 2 reports a torrent finished once every piece
// passed its hash check, which it can do from blocks still waiting in
// its store buffer, so the last writes may reach the file a moment
// later. It polls until the files match, and fails as sameFile does if
// they still differ after a few seconds.
func settledSameFile(t testing.TB, want, got string) {
	t.Helper()
	wantSum, _, err := fileSHA256(want)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for polls := 0; ; polls++ {
		sum, _, err := fileSHA256(got)
		if err == nil && sum == wantSum {
			if polls > 0 {
				t.Logf("%s matched only after %d polls: libtorrent reported it finished before its last writes", got, polls)
			}
			return
		}
		if time.Now().After(deadline) {
			sameFile(t, want, got)
			t.Fatalf("%s: %v", got, err)
		}
		time.Sleep(pollInterval)
	}
}

// tbTracker is a running `tbproxy tracker`.
type tbTracker struct {
	proc     *proc
	announce string // http://127.0.0.1:PORT/announce
	udp      string // udp://127.0.0.1:PORT/announce
	scrape   string // http://127.0.0.1:PORT/scrape
}

// startTBTracker starts `tbproxy tracker` on one free TCP+UDP port.
func startTBTracker(t testing.TB, extra ...string) *tbTracker {
	t.Helper()
	addr := hostPort(freeTCPUDPPort(t))
	args := append([]string{"tracker", "--listen", addr, "--log-level", pubLogLevel()}, extra...)
	return &tbTracker{
		proc:     startReadyProc(t, "tbproxy tracker:", args...),
		announce: "http://" + addr + "/announce",
		udp:      "udp://" + addr + "/announce",
		scrape:   "http://" + addr + "/scrape",
	}
}

// scrapeOf asks an HTTP tracker for its counts for ih.
func scrapeOf(scrapeURL string, ih metainfo.Hash) (tracker.ScrapeResponse, error) {
	body, err := httpGetLoopback(scrapeURL + "?info_hash=" + escapeAll(ih[:]))
	if err != nil {
		return tracker.ScrapeResponse{}, err
	}
	files, err := tracker.ParseScrapeResponse(body, tracker.Limits{})
	if err != nil {
		return tracker.ScrapeResponse{}, fmt.Errorf("scrape reply %q: %w", body, err)
	}
	return files[ih], nil
}

// waitScrape polls an HTTP tracker's scrape until it counts at least
// seeders seeders and peers peers in all for ih.
func waitScrape(t testing.TB, trk *proc, scrapeURL string, ih metainfo.Hash, seeders, peers int) tracker.ScrapeResponse {
	t.Helper()
	deadline := time.Now().Add(pubReadyTimeout)
	for {
		st, err := scrapeOf(scrapeURL, ih)
		if err == nil && st.Complete >= seeders && st.Complete+st.Incomplete >= peers {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s for %v: %+v (err %v), want %d seeders and %d peers\n%s", scrapeURL, ih, st, err, seeders, peers, trk.Tail(30))
		}
		select {
		case <-trk.Done():
			t.Fatalf("%s exited (%s):\n%s", trk.name, trk.state(), trk.Tail(50))
		case <-time.After(pollInterval):
		}
	}
}

// escapeAll percent-encodes every byte but the unreserved ones, as a
// client must for a binary info_hash or peer_id.
func escapeAll(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

// TestPublishThroughProxies: a 32 MiB file published by `tbproxy publish`
// reaches curl through a tbproxy proxy byte for byte; a second proxy then
// downloads it too, partly from the first proxy, which reseeds it. The
// publisher sends less than twice the file in all.
func TestPublishThroughProxies(t *testing.T) {
	requireTool(t, "curl")
	const size = 32 << 20
	dir := t.TempDir()
	content := makeContent(t, dir, "pub/episode.mp3", size, 7001)
	data, err := os.ReadFile(content)
	if err != nil {
		t.Fatal(err)
	}
	pub := startPublisher(t, dir)
	const path = "/pub/episode.mp3"
	target := pub.url + path

	m, _ := pub.waitMetainfo(t, path, nil)
	checkPieces(t, m, content)
	if m.Announce != pub.url+"/announce" || !slices.Equal(m.URLList, []string{target}) {
		t.Errorf("announce %q, url-list %q; want the publisher's tracker and the file's URL", m.Announce, m.URLList)
	}
	etag := `"bt-` + m.InfoHash.HexString() + `-0"`
	t.Logf("published %s: %v, %d pieces of %d KiB", path, m.InfoHash, m.Info.NumPieces(), m.Info.PieceLength>>10)
	// The metainfo answer says what a plain request gets, so that proxies
	// need not ask: the file's length and modification time.
	fi, err := os.Stat(content)
	if err != nil {
		t.Fatal(err)
	}
	said := pub.negotiate(t, path).header
	if got, want := said.Get("Tbp-Plain-Length"), fmt.Sprint(size); got != want {
		t.Errorf("Tbp-Plain-Length %q, want %q", got, want)
	}
	if got, want := said.Get("Tbp-Plain-Last-Modified"), fi.ModTime().UTC().Format(http.TimeFormat); got != want {
		t.Errorf("Tbp-Plain-Last-Modified %q, want %q", got, want)
	}
	base := pub.written(t)

	p1 := startTBProxy(t, tbOpts{ui: true})
	res := curl(t, p1.proxyURL(), target)
	checkWhole(t, "first proxy", res, data, etag)
	st1 := p1.waitIdle(t)
	after1 := pub.written(t)
	t.Logf("first proxy: %.2fs, %s; the publisher wrote %d bytes (%.2f× the file)",
		res.elapsed, mbps(res.speed), after1-base, float64(after1-base)/size)
	if st1.Transformed != 1 || st1.Fallbacks != 0 {
		t.Errorf("first proxy: %d transformed, %d fallbacks; want 1 and 0", st1.Transformed, st1.Fallbacks)
	}
	// The publisher's engine and the first proxy are both in the swarm.
	sw := waitScrape(t, pub.proc, pub.url+"/scrape", m.InfoHash, 1, 2)
	t.Logf("the publisher's tracker before the second proxy: %d seeders, %d leechers", sw.Complete, sw.Incomplete)

	p2 := startTBProxy(t, tbOpts{ui: true})
	var (
		res2       curlResult
		err2       error
		done       = make(chan struct{})
		env, tmp   = toolEnv(t), t.TempDir()
		ctx, proxy = t.Context(), p2.proxyURL()
	)
	go func() {
		defer close(done)
		res2, err2 = runCurl(ctx, env, tmp, proxy, target, true)
	}()
	// Sample the second proxy's transfer while it runs: the status page
	// drops a transfer once it ends.
	var fromPeers, fromOrigin int64
	samples := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(10 * time.Millisecond):
			for _, tr := range p2.status(t).Transfers {
				samples++
				fromPeers, fromOrigin = max(fromPeers, tr.FromPeers), max(fromOrigin, tr.FromOrigin)
			}
		}
	}
	if err2 != nil {
		t.Fatalf("second proxy: %v\n%s", err2, p2.proc.Tail(30))
	}
	checkWhole(t, "second proxy", res2, data, etag)
	st2 := p2.waitIdle(t)
	after2 := pub.written(t)
	pub2 := after2 - after1
	t.Logf("second proxy: %.2fs, %s; the publisher wrote %d bytes (%.2f× the file), so at least %d bytes came from the first proxy",
		res2.elapsed, mbps(res2.speed), pub2, float64(pub2)/size, max(0, size-pub2))
	t.Logf("second proxy's status while active (%d samples): at most %d bytes from peers, %d from the origin", samples, fromPeers, fromOrigin)
	if st2.Transformed != 1 || st2.Fallbacks != 0 {
		t.Errorf("second proxy: %d transformed, %d fallbacks; want 1 and 0", st2.Transformed, st2.Fallbacks)
	}
	if samples > 0 && fromPeers == 0 {
		t.Errorf("the second proxy's transfer never showed bytes from peers")
	}
	if pub2 >= size {
		t.Errorf("the publisher wrote %d bytes for the second download of a %d-byte file: nothing came from the first proxy", pub2, size)
	}
	total := after2 - base
	t.Logf("publisher total for two downloads: %d bytes = %.2f× the file", total, float64(total)/size)
	if total >= 2*size {
		t.Errorf("the publisher wrote %d bytes for two downloads of a %d-byte file, want less than twice the file", total, size)
	}

	// A HEAD gets what the GET got, from the metainfo and the publisher's
	// word on its plain answer, and fetches nothing of the file.
	head := curl(t, p2.proxyURL(), target, "-I")
	if head.status != http.StatusOK || head.header.Get("ETag") != etag || head.header.Get("Content-Length") != fmt.Sprint(size) ||
		head.header.Get("Content-Type") != res2.header.Get("Content-Type") || head.header.Get("Last-Modified") != res2.header.Get("Last-Modified") {
		t.Errorf("HEAD: status %d, headers %v; the GET's were %v", head.status, head.header, res2.header)
	}
	if w := pub.written(t); w-after2 > 64<<10 {
		t.Errorf("the publisher wrote %d bytes for a HEAD", w-after2)
	}
	if st := p2.status(t); len(st.Transfers) != 0 {
		t.Errorf("a HEAD started a transfer: %+v", st.Transfers)
	}
}

// TestPublishPlainTorrentClients: the metainfo a client gets by asking
// the publisher for application/x-bittorrent is an ordinary torrent:
// aria2 and libtorrent find the publisher's engine through its tracker
// and download the file.
func TestPublishPlainTorrentClients(t *testing.T) {
	requireTool(t, "curl")
	requireTool(t, "aria2c")
	requireTool(t, "libtorrent")
	dir := t.TempDir()
	content := makeContent(t, dir, "files/show.bin", 16<<20+12345, 7002)
	pub := startPublisher(t, dir)
	m, body := pub.waitMetainfo(t, "/files/show.bin", nil)
	torrent := filepath.Join(t.TempDir(), "show.torrent")
	if err := os.WriteFile(torrent, body, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("metainfo: %d bytes, created by %q, announce %s, url-list %q", len(body), m.CreatedBy, m.Announce, m.URLList)
	// The same torrent without its url-list can only come from the
	// publisher's engine, found through the publisher's tracker.
	stripped := *m
	stripped.URLList = nil
	noWebSeed, err := stripped.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	trackerOnly := filepath.Join(t.TempDir(), "show-no-url-list.torrent")
	if err := os.WriteFile(trackerOnly, noWebSeed, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, v := range []struct{ name, torrent string }{{"as served", torrent}, {"without url-list", trackerOnly}} {
		t.Run(v.name, func(t *testing.T) {
			base := pub.written(t)
			ariaDir, ltDir := t.TempDir(), t.TempDir()
			start := time.Now()
			aria := startAria2(t, AriaOpts{Torrent: v.torrent, Dir: ariaDir})
			lt := startLibtorrent(t, LTOpts{Torrent: v.torrent, SaveDir: ltDir})
			if err := aria.WaitFinished(pubTransfer); err != nil {
				t.Errorf("aria2: %v\n%s", err, aria.Proc().Tail(30))
			} else {
				sameFile(t, content, filepath.Join(ariaDir, m.Info.Name))
				t.Logf("aria2 done after %v", time.Since(start).Round(time.Millisecond))
			}
			if err := lt.WaitFinished(pubTransfer); err != nil {
				t.Errorf("libtorrent: %v", err)
			} else {
				settledSameFile(t, content, filepath.Join(ltDir, m.Info.Name))
				t.Logf("libtorrent done after %v", time.Since(start).Round(time.Millisecond))
			}
			w := pub.written(t) - base
			t.Logf("the publisher wrote %d bytes for the two downloads (%.2f× the file)", w, float64(w)/float64(m.Info.TotalLength))
			if w < m.Info.TotalLength {
				t.Errorf("the publisher wrote %d bytes, less than the file: the clients did not get it from the publisher", w)
			}
		})
	}
}

// TestPublishTrackerInterchangeable: opentracker and `tbproxy tracker`
// each bring a libtorrent seed, an aria2 leecher and a libtorrent
// leecher together, over HTTP and UDP. (aria2 cannot announce over UDP
// with DHT off, so in the UDP cases it asks the same tracker over HTTP
// for the seed that announced over UDP.)
func TestPublishTrackerInterchangeable(t *testing.T) {
	requireTool(t, "libtorrent")
	requireTool(t, "aria2c")
	// announce is what the torrent names; http is the same tracker over
	// HTTP, for scrapes and for aria2, whose UDP tracker client needs DHT,
	// which every peer here has switched off ("udp is not supported yet").
	type trackerURLs struct {
		announce, http, scrape string
		proc                   *proc
	}
	cases := []struct {
		name  string
		start func(t *testing.T, ih metainfo.Hash) trackerURLs
	}{
		{"opentracker http", func(t *testing.T, ih metainfo.Hash) trackerURLs {
			o := startOpentrackerServer(t, []string{ih.HexString()})
			return trackerURLs{o.AnnounceURL, o.AnnounceURL, o.ScrapeURL, o.proc}
		}},
		{"opentracker udp", func(t *testing.T, ih metainfo.Hash) trackerURLs {
			o := startOpentrackerServer(t, []string{ih.HexString()})
			return trackerURLs{o.UDPURL, o.AnnounceURL, o.ScrapeURL, o.proc}
		}},
		{"tbproxy tracker http", func(t *testing.T, ih metainfo.Hash) trackerURLs {
			tr := startTBTracker(t, "--interval", "1m")
			return trackerURLs{tr.announce, tr.announce, tr.scrape, tr.proc}
		}},
		{"tbproxy tracker udp", func(t *testing.T, ih metainfo.Hash) trackerURLs {
			tr := startTBTracker(t, "--interval", "1m")
			return trackerURLs{tr.udp, tr.announce, tr.scrape, tr.proc}
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasPrefix(tc.name, "opentracker") {
				requireTool(t, "opentracker")
			}
			dir := t.TempDir()
			content := makeContent(t, dir, "swarm.bin", 8<<20+777, 7100+int64(i))
			_, bare := makeTorrent(t, content, 256<<10, nil)
			trk := tc.start(t, bare.InfoHash)
			torrent, m := makeTorrent(t, content, 256<<10, []string{trk.announce})
			if m.InfoHash != bare.InfoHash {
				t.Fatalf("the tracker changed the info-hash")
			}
			start := time.Now()
			seed := startLibtorrent(t, LTOpts{Torrent: torrent, SaveDir: dir, Seed: true, SeedMode: true})
			waitScrape(t, trk.proc, trk.scrape, m.InfoHash, 1, 1)
			ariaDir, ltDir := t.TempDir(), t.TempDir()
			ao := AriaOpts{Torrent: torrent, Dir: ariaDir}
			if trk.http != trk.announce {
				// The seed announced over UDP; aria2 hears of it from
				// the same tracker over HTTP.
				ao.Tracker = trk.http
			}
			aria := startAria2(t, ao)
			lt := startLibtorrent(t, LTOpts{Torrent: torrent, SaveDir: ltDir})
			if err := aria.WaitFinished(pubTransfer); err != nil {
				t.Errorf("aria2: %v\n%s", err, aria.Proc().Tail(20))
			} else {
				sameFile(t, content, filepath.Join(ariaDir, m.Info.Name))
			}
			if err := lt.WaitFinished(pubTransfer); err != nil {
				t.Errorf("libtorrent leech: %v", err)
			} else {
				settledSameFile(t, content, filepath.Join(ltDir, m.Info.Name))
			}
			st, err := scrapeOf(trk.scrape, m.InfoHash)
			t.Logf("%s: both leechers done in %v; seed uploaded %d bytes; scrape %+v (err %v)",
				trk.announce, time.Since(start).Round(time.Millisecond), seed.LastStatus().TotalUpload, st, err)
		})
	}
}

// TestPublishChangesAndRules: a rewritten file gets a new info-hash and
// the old one is no longer tracked; a file below --min-size and a file
// matched by --exclude are served plainly even to a client asking for a
// torrent.
func TestPublishChangesAndRules(t *testing.T) {
	requireTool(t, "curl")
	dir := t.TempDir()
	changing := makeContent(t, dir, "pub/changing.bin", 4<<20, 7201)
	small := makeContent(t, dir, "pub/small.bin", 300<<10, 7202)
	excluded := makeContent(t, dir, "pub/image.iso", 4<<20, 7203)
	pub := startPublisher(t, dir, "--min-size", "1MiB", "--exclude", "*.iso")

	// plain fails unless a negotiation for path gets the file itself, not
	// marked as negotiable (no Vary: Accept), so that it is not merely a
	// file whose hash is still in progress.
	plain := func(t *testing.T, path, file string) {
		t.Helper()
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		res := pub.negotiate(t, path)
		if res.status != http.StatusOK || !bytes.Equal(res.body, want) {
			t.Fatalf("%s: status %d, Content-Type %q, %d bytes; want the %d-byte file", path, res.status, res.header.Get("Content-Type"), len(res.body), len(want))
		}
		if strings.Contains(res.header.Get("Vary"), "Accept") {
			t.Errorf("%s: Vary %q: the publisher treats it as negotiable", path, res.header.Get("Vary"))
		}
	}
	t.Run("excluded by glob", func(t *testing.T) { plain(t, "/pub/image.iso", excluded) })
	t.Run("below min-size", func(t *testing.T) { plain(t, "/pub/small.bin", small) })

	t.Run("changed file", func(t *testing.T) {
		m1, _ := pub.waitMetainfo(t, "/pub/changing.bin", nil)
		checkPieces(t, m1, changing)
		old, err := os.Stat(changing)
		if err != nil {
			t.Fatal(err)
		}
		// Rewrite it in place with other bytes (the same size, so only
		// the bytes and the time tell the versions apart).
		makeContent(t, dir, "pub/changing.bin", 4<<20, 7299)
		mtime := old.ModTime().Add(2 * time.Second)
		if err := os.Chtimes(changing, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		m2, _ := pub.waitMetainfo(t, "/pub/changing.bin", func(m *metainfo.MetaInfo) bool { return m.InfoHash != m1.InfoHash })
		checkPieces(t, m2, changing)
		t.Logf("info-hash %v became %v", m1.InfoHash, m2.InfoHash)

		// The tracker follows: the old version is dropped, the new one
		// tracked.
		if _, err := announceRaw(pub.url+"/announce", validQuery(m2.InfoHash, "-PT0001-newversion01", 40001, 0)); err != nil {
			t.Errorf("announce of the new info-hash: %v", err)
		}
		deadline := time.Now().Add(pubReadyTimeout)
		for {
			_, err := announceRaw(pub.url+"/announce", validQuery(m1.InfoHash, "-PT0001-oldversion01", 40002, 1<<20))
			var fe *tracker.FailureError
			if errors.As(err, &fe) {
				t.Logf("the old info-hash is refused: %q", fe.Reason)
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the publisher's tracker still tracks the old info-hash %v after %v (last: %v)", m1.InfoHash, pubReadyTimeout, err)
				break
			}
			time.Sleep(pollInterval)
		}
	})

	// Long after a hash of its size would have finished, the excluded
	// file is still plain.
	t.Run("excluded, again", func(t *testing.T) { plain(t, "/pub/image.iso", excluded) })
}

// rawGet fetches a loopback URL exactly as given (the query is sent as
// written) and returns the status and body.
func rawGet(rawURL string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		return 0, nil, err
	}
	if req.URL.Hostname() != loopback {
		return 0, nil, fmt.Errorf("refusing non-loopback URL %s", rawURL)
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// announceRaw sends an HTTP announce with a hand-built query and parses
// the reply; a refusal is a *tracker.FailureError. Any other status than
// 200 is an error.
func announceRaw(announceURL, query string) (tracker.AnnounceResponse, error) {
	status, body, err := rawGet(announceURL + "?" + query)
	if err != nil {
		return tracker.AnnounceResponse{}, err
	}
	if status != http.StatusOK {
		return tracker.AnnounceResponse{}, fmt.Errorf("status %d, body %q", status, body)
	}
	if !bencode.Valid(body) {
		return tracker.AnnounceResponse{}, fmt.Errorf("reply is not bencode: %q", body)
	}
	return tracker.ParseAnnounceResponse(body, tracker.Limits{MaxPeers: 10000, MinInterval: time.Second})
}

// validQuery is a well-formed compact announce query.
func validQuery(ih metainfo.Hash, peerID string, port int, left int64) string {
	return "info_hash=" + escapeAll(ih[:]) +
		"&peer_id=" + escapeAll([]byte(peerID)) +
		"&port=" + strconv.Itoa(port) +
		"&uploaded=0&downloaded=0&left=" + strconv.FormatInt(left, 10) +
		"&compact=1"
}

// TestPublishBadAnnounces: hostile announces and scrapes against `tbproxy
// tracker` and against the publisher's /announce get bencoded refusals
// (or are made harmless), and the process keeps answering.
func TestPublishBadAnnounces(t *testing.T) {
	requireTool(t, "curl")
	dir := t.TempDir()
	makeContent(t, dir, "f.bin", 2<<20, 7301)
	pub := startPublisher(t, dir)
	m, _ := pub.waitMetainfo(t, "/f.bin", nil)
	trk := startTBTracker(t)

	targets := []struct {
		name             string
		announce, scrape string
		proc             *proc
		ih               metainfo.Hash // a hash the tracker accepts
	}{
		{"tbproxy tracker", trk.announce, trk.scrape, trk.proc, metainfo.Hash([]byte("tbproxy-bad-announce"))},
		{"tbproxy publish", pub.url + "/announce", pub.url + "/scrape", pub.proc, m.InfoHash},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			ih := escapeAll(tg.ih[:])
			pid := "&peer_id=" + escapeAll([]byte("-PT0001-hostile00001"))
			rest := "&uploaded=0&downloaded=0&compact=1"
			refused := []struct{ name, query string }{
				{"missing info_hash", "port=6881&left=0" + pid + rest},
				{"19-byte info_hash", "info_hash=" + escapeAll(tg.ih[:19]) + "&port=6881&left=0" + pid + rest},
				{"21-byte info_hash", "info_hash=" + ih + "%00&port=6881&left=0" + pid + rest},
				{"bad escape in info_hash", "info_hash=%ZZ" + ih[3:] + "&port=6881&left=0" + pid + rest},
				{"info_hash twice", "info_hash=" + ih + "&info_hash=" + ih + "&port=6881&left=0" + pid + rest},
				{"missing peer_id", "info_hash=" + ih + "&port=6881&left=0" + rest},
				{"port=0", "info_hash=" + ih + "&port=0&left=0" + pid + rest},
				{"port=65536", "info_hash=" + ih + "&port=65536&left=0" + pid + rest},
				{"left=-1", "info_hash=" + ih + "&port=6881&left=-1" + pid + rest},
				{"query too long", "info_hash=" + ih + "&port=6881&left=0" + pid + rest + "&pad=" + strings.Repeat("x", 5000)},
			}
			if tg.name == "tbproxy publish" {
				other := metainfo.Hash([]byte("not-published-by-us!"))
				refused = append(refused, struct{ name, query string }{"hash not published", validQuery(other, "-PT0001-hostile00002", 6881, 0)})
			}
			for _, c := range refused {
				_, err := announceRaw(tg.announce, c.query)
				var fe *tracker.FailureError
				if !errors.As(err, &fe) {
					t.Errorf("%s: got %v, want a bencoded failure reason", c.name, err)
					continue
				}
				t.Logf("%s: %q", c.name, fe.Reason)
			}

			// A full scrape is refused with a failure reason.
			status, body, err := rawGet(tg.scrape)
			var sr struct {
				Failure string `bencode:"failure reason"`
			}
			if err != nil || status != http.StatusOK || bencode.Unmarshal(body, &sr) != nil || sr.Failure == "" {
				t.Errorf("full scrape: status %d, err %v, body %q; want a bencoded failure reason", status, err, body)
			} else {
				t.Logf("full scrape: %q", sr.Failure)
			}

			// ip= is not trusted: the spoofer is listed at its socket
			// address, if at all, never at the address it named.
			spoofer := validQuery(tg.ih, "-PT0001-spoofer00001", 50001, 1<<20) + "&ip=1.2.3.4"
			if _, err := announceRaw(tg.announce, spoofer); err != nil {
				t.Logf("spoofing announce refused: %v", err)
			}
			if _, err := announceRaw(tg.announce, validQuery(tg.ih, "-PT0001-honest000001", 50002, 1<<20)); err != nil {
				t.Fatalf("honest announce: %v", err)
			}
			resp, err := announceRaw(tg.announce, validQuery(tg.ih, "-PT0001-honest000002", 50003, 1<<20)+"&numwant=99999999999999999999")
			if err != nil {
				t.Fatalf("announce with a huge numwant: %v", err)
			}
			t.Logf("after the spoofer, an honest peer with numwant=10^20 got %d peers: %v", len(resp.Peers), resp.Peers)
			if len(resp.Peers) > pubMaxNumWant {
				t.Errorf("a huge numwant got %d peers, more than %d", len(resp.Peers), pubMaxNumWant)
			}
			for _, p := range resp.Peers {
				if p.Addr() == netip.MustParseAddr("1.2.3.4") {
					t.Errorf("the spoofed address %v is in the peer list %v", p, resp.Peers)
				}
			}
			if !slices.Contains(resp.Peers, netip.MustParseAddrPort("127.0.0.1:50002")) {
				t.Errorf("the honest peer 127.0.0.1:50002 is missing from %v", resp.Peers)
			}

			// Garbage on the UDP tracker port.
			if c, err := net.Dial("udp", strings.TrimPrefix(strings.TrimSuffix(tg.announce, "/announce"), "http://")); err == nil {
				for _, junk := range [][]byte{{0}, bytes.Repeat([]byte{0xff}, 16), bytes.Repeat([]byte{0x41}, 2000)} {
					c.Write(junk)
				}
				c.Close()
			}

			// Still alive, and still working, over HTTP and UDP.
			if code := tg.proc.ExitCode(); code != -2 {
				t.Fatalf("the tracker exited (%d):\n%s", code, tg.proc.Tail(30))
			}
			resp, err = announceRaw(tg.announce, validQuery(tg.ih, "-PT0001-afterwards01", 50004, 0))
			if err != nil {
				t.Fatalf("a valid announce afterwards: %v\n%s", err, tg.proc.Tail(30))
			}
			if len(resp.Peers) == 0 {
				t.Errorf("a valid announce afterwards got no peers")
			}
			udpURL := "udp://" + strings.TrimPrefix(tg.announce, "http://")
			uc := &tracker.Client{UDP: tracker.UDPClient{BaseTimeout: 250 * time.Millisecond, Retries: 3}}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			uresp, err := uc.Announce(ctx, udpURL, tracker.AnnounceRequest{
				InfoHash: tg.ih, PeerID: [20]byte([]byte("-PT0001-udpafter0001")), Port: 50005, Left: 1, NumWant: 50,
			})
			if err != nil {
				t.Errorf("a valid UDP announce afterwards: %v", err)
			} else if len(uresp.Peers) == 0 {
				t.Errorf("a valid UDP announce afterwards got no peers")
			}
			if st, err := scrapeOf(tg.scrape, tg.ih); err != nil {
				t.Errorf("scrape afterwards: %v", err)
			} else {
				t.Logf("scrape afterwards: %+v", st)
			}
		})
	}
}
