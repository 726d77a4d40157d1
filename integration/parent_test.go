package integration

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// tinyproxyParent is a running tinyproxy that demands credentials: the
// organisation's proxy in front of the network.
type tinyproxyParent struct {
	proc *proc
	port int
	log  string // its log file
}

// startTinyproxyParent starts tinyproxy on loopback, allowing loopback
// clients with the credentials user:pass, logging each request.
func startTinyproxyParent(t *testing.T, user, pass string) *tinyproxyParent {
	t.Helper()
	requireTool(t, "tinyproxy")
	dir := t.TempDir()
	tp := &tinyproxyParent{port: freePort(t), log: filepath.Join(dir, "tinyproxy.log")}
	conf := fmt.Sprintf("Port %d\nListen 127.0.0.1\nTimeout 60\nMaxClients 64\nAllow 127.0.0.1\n"+
		"BasicAuth %s %s\nLogFile %q\nLogLevel Info\nPidFile %q\n",
		tp.port, user, pass, tp.log, filepath.Join(dir, "tinyproxy.pid"))
	path := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	tp.proc = startProc(t, "tinyproxy", "-d", "-c", path)
	waitTCP(t, tp.proc, tp.port, startTimeout)
	return tp
}

// logged reports whether tinyproxy's log has a line with all of words.
func (tp *tinyproxyParent) logged(t *testing.T, words ...string) bool {
	t.Helper()
	data, err := os.ReadFile(tp.log)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return true
		}
	}
	return false
}

// TestProxyParent: with --parent-proxy, tbproxy reaches origins only
// through tinyproxy, with its credentials: the negotiation, the
// confirmation, the engine's web seed ranges and tracker announces, and a
// CONNECT tunnel. The file, which only the origin serves, arrives whole
// and from the torrent.
func TestProxyParent(t *testing.T) {
	requireTool(t, "curl")
	tp := startTinyproxyParent(t, "corp", "s3cret")
	origin := newTestOrigin(t, false)
	content := makeContent(t, t.TempDir(), "episode.mp3", 8<<20+321, 42)
	_, m := makeTorrent(t, content, proxyPieceLen, []string{origin.URL + "/announce-empty"})
	torrent, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	f := origin.addFile("/corp/episode.mp3", &originFile{content: content, torrent: torrent})
	data, err := os.ReadFile(content)
	if err != nil {
		t.Fatal(err)
	}
	tlsOrigin := newTestOrigin(t, true)
	tlsOrigin.addFile("/secure/page.mp3", &originFile{content: content})

	p := startTBProxy(t, tbOpts{extra: []string{
		"--parent-proxy", "http://corp:s3cret@" + hostPort(tp.port),
		"--connect-ports", strconv.Itoa(tlsOrigin.port(t)),
	}})

	res := curl(t, p.proxyURL(), origin.URL+"/corp/episode.mp3")
	checkWhole(t, "through the parent", res, data, `"bt-`+hex.EncodeToString(m.InfoHash[:])+`-0"`)
	p.waitIdle(t)
	if f.torrents.Load() != 1 || f.confirms.Load() != 1 || f.plainGets.Load() == 0 {
		t.Errorf("the origin answered %d negotiations, %d confirmations and %d web seed ranges; want 1, 1 and some",
			f.torrents.Load(), f.confirms.Load(), f.plainGets.Load())
	}
	origin.mu.Lock()
	all := slices.Clone(origin.log)
	origin.mu.Unlock()
	announces := 0
	for _, r := range all {
		if !strings.Contains(r.Via, "tinyproxy") {
			t.Errorf("%s %s (Range %q) reached the origin not through tinyproxy (Via %q)", r.Method, r.Path, r.Range, r.Via)
		}
		if r.Path == "/announce-empty" {
			announces++
		}
	}
	if announces == 0 {
		t.Error("no announce reached the tracker")
	}
	if !tp.logged(t, "GET", origin.URL+"/corp/episode.mp3") {
		t.Errorf("tinyproxy logged no GET of the file:\n%s", tp.proc.Tail(20))
	}

	// HTTPS without --mitm is a blind tunnel, opened through the parent.
	res = curl(t, p.proxyURL(), tlsOrigin.URL+"/secure/page.mp3", "--cacert", tlsOrigin.certPEM(t))
	if res.status != http.StatusOK || string(res.body) != string(data) {
		t.Fatalf("HTTPS through the parent's tunnel: status %d, %d bytes", res.status, len(res.body))
	}
	if !tp.logged(t, "CONNECT", hostPort(tlsOrigin.port(t))) {
		t.Errorf("tinyproxy logged no CONNECT to %s", hostPort(tlsOrigin.port(t)))
	}
	for _, r := range tlsOrigin.requests("/secure/page.mp3") {
		if r.Via != "" {
			t.Errorf("a tunnelled request was rewritten on the way (Via %q)", r.Via)
		}
	}

	// No credentials: a clear 502, not the parent's 407, whose
	// Proxy-Authenticate would have the client offer its own to tbproxy.
	bad := startTBProxy(t, tbOpts{extra: []string{
		"--parent-proxy", "http://" + hostPort(tp.port),
		"--connect-ports", strconv.Itoa(tlsOrigin.port(t)),
	}})
	res = curl(t, bad.proxyURL(), origin.URL+"/corp/episode.mp3")
	if res.status != http.StatusBadGateway || !strings.Contains(string(res.body), "parent proxy") || res.header.Get("Proxy-Authenticate") != "" {
		t.Fatalf("no credentials: status %d %q (Proxy-Authenticate %q)", res.status, res.body, res.header.Get("Proxy-Authenticate"))
	}
	// Nor through a tunnel, which tinyproxy refuses.
	res, err = runCurl(t.Context(), toolEnv(t), t.TempDir(), bad.proxyURL(), tlsOrigin.URL+"/secure/page.mp3", true, "--cacert", tlsOrigin.certPEM(t))
	if err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("HTTPS through a parent that refuses the tunnel: status %d, %v; want curl to fail on a CONNECT answered 502", res.status, err)
	}
}
