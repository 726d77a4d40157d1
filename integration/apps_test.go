//go:build linux

package integration

// End-to-end tests with real applications (issue #8): a podcast client
// (podget), a browser (headless Chromium driven over the DevTools
// protocol), a package manager (apt-get) and everyday downloaders (curl,
// wget, Python's urllib, resuming) fetch files that `tbproxy publish`
// serves, through `tbproxy run`, and get them byte for byte from the
// swarm. Everything listens on 127.0.0.1; each application runs with a
// private HOME and private configuration, so the machine's own settings
// are neither read where it matters nor written.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/remote"
)

const (
	// appTimeout bounds one application's whole run in these tests.
	appTimeout = 2 * time.Minute
	// appStatusShot is where TestAppChromium saves its screenshot of the
	// status page, relative to the package directory.
	appStatusShot = "testdata/artifacts/status-page.png"
)

// appWorld is a published directory, its publisher and a proxy with its
// own status port.
type appWorld struct {
	pub   *publisher
	proxy *tbProxy
}

// newAppWorld publishes dir and starts a proxy, then waits until the
// publisher offers metainfo for each of ready (URL paths), so that the
// application's first request is already negotiated, not answered plainly
// while the publisher hashes.
func newAppWorld(t *testing.T, dir string, ready []string, pubExtra ...string) *appWorld {
	t.Helper()
	w := &appWorld{pub: startPublisher(t, dir, pubExtra...)}
	for _, path := range ready {
		w.pub.waitMetainfo(t, path, nil)
	}
	w.proxy = startTBProxy(t, tbOpts{ui: true})
	return w
}

// url is the published URL of path.
func (w *appWorld) url(path string) string { return w.pub.url + path }

// checkServedFromSwarm fails unless the proxy logged that it served path
// from the swarm, to a client whose User-Agent contains app (if set).
func (w *appWorld) checkServedFromSwarm(t testing.TB, path, app string) {
	t.Helper()
	target := "url=" + w.url(path) + " "
	for _, line := range strings.Split(w.proxy.proc.Tail(ringLines), "\n") {
		if strings.Contains(line, `msg="serving from the swarm"`) && strings.Contains(line, target) &&
			strings.Contains(line, app) {
			return
		}
	}
	t.Errorf("the proxy never logged serving %s from the swarm to %q:\n%s", path, app, w.proxy.proc.Tail(20))
}

// waitTransformed waits for the proxy to be idle and fails unless at
// least want requests were transformed since before.
func (w *appWorld) waitTransformed(t testing.TB, before proxyStatus, want int64) proxyStatus {
	t.Helper()
	st := w.proxy.waitIdle(t)
	if got := st.Transformed - before.Transformed; got < want {
		t.Errorf("requests_transformed went from %d to %d, want at least %d more (passed through %d, fallbacks %d)",
			before.Transformed, st.Transformed, want, st.Passed-before.Passed, st.Fallbacks-before.Fallbacks)
	}
	if st.Fallbacks != before.Fallbacks {
		t.Errorf("requests_fallback went from %d to %d", before.Fallbacks, st.Fallbacks)
	}
	return st
}

// appRun runs an application to completion with env and fails the test
// if it does not exit 0 within appTimeout. It returns stdout and stderr.
func appRun(t testing.TB, env []string, dir, name string, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), appTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Dir = dir
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err,
			appLastLines(stdout.String(), 30), appLastLines(stderr.String(), 30))
	}
	return stdout.String(), stderr.String()
}

// appLastLines returns the last n lines of s.
func appLastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// appWriteFile writes data at path, creating its directory.
func appWriteFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// appFileSize returns the size of path, or -1 if it cannot be read.
func appFileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// appEpisode is one item of a podcast feed.
type appEpisode struct {
	title, path string
	size        int64
}

// appPodcastFeed is an RSS 2.0 feed whose enclosures point at base+path.
func appPodcastFeed(base string, eps []appEpisode) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<rss version="2.0"><channel>` + "\n")
	fmt.Fprintf(&b, "<title>tbproxy test cast</title><link>%s/</link><description>episodes served by tbproxy publish</description>\n", base)
	day := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	for i, ep := range eps {
		fmt.Fprintf(&b, "<item><title>%s</title><guid isPermaLink=\"false\">tbproxy-test-%d</guid><pubDate>%s</pubDate>"+
			"<enclosure url=\"%s%s\" length=\"%d\" type=\"audio/mpeg\"/></item>\n",
			ep.title, i, day.AddDate(0, 0, i).Format(time.RFC1123Z), base, ep.path, ep.size)
	}
	b.WriteString("</channel></rss>\n")
	return b.String()
}

// TestAppPodget: podget subscribes to a feed that `tbproxy publish`
// serves and downloads its two episodes with wget through the proxy; they
// arrive byte for byte, transformed, while the feed itself passes through.
func TestAppPodget(t *testing.T) {
	requireTool(t, "podget")
	requireTool(t, "wget")
	requireTool(t, "curl")
	dir := t.TempDir()
	eps := []appEpisode{
		{title: "Episode one", path: "/cast/episode-one.mp3", size: 12<<20 + 4321},
		{title: "Episode two", path: "/cast/episode-two.mp3", size: 9<<20 + 77},
	}
	for i, ep := range eps {
		makeContent(t, dir, ep.path, ep.size, int64(8100+i))
	}
	w := newAppWorld(t, dir, []string{eps[0].path, eps[1].path})
	appWriteFile(t, filepath.Join(dir, "cast", "feed.xml"), appPodcastFeed(w.pub.url, eps))

	// podget keeps its configuration in the directory given by
	// --dir_config (by default $HOME/.podget), and its library, session
	// files and logs where the configuration says; everything here is
	// private to the test. The configuration is podget's own default with
	// our settings appended: it is a bash file, so the last assignment
	// wins, and podget insists on the version line of its own template.
	home := t.TempDir()
	conf := filepath.Join(home, ".podget")
	lib := filepath.Join(home, "library")
	for _, d := range []string{conf, lib} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := append(toolEnv(t), "HOME="+home, "http_proxy="+w.proxy.proxyURL(), "WGETRC="+filepath.Join(home, "wgetrc"))
	appWriteFile(t, filepath.Join(home, "wgetrc"), "tries = 1\n")
	appRun(t, env, home, "podget", "--dir_config", conf, "--create-config", "podgetrc")
	rc, err := os.ReadFile(filepath.Join(conf, "podgetrc"))
	if err != nil {
		t.Fatalf("podget --create-config wrote no podgetrc: %v", err)
	}
	rc = append(rc, fmt.Sprintf("\n# tbproxy test settings\nDIR_LIBRARY=%s\nDIR_SESSION=%s\nDIR_LOG=%s\nNO_PLAYLIST=1\nMOST_RECENT=0\n",
		lib, filepath.Join(home, "session"), filepath.Join(home, "log"))...)
	appWriteFile(t, filepath.Join(conf, "podgetrc"), string(rc))
	// serverlist: URL, category, name.
	appWriteFile(t, filepath.Join(conf, "serverlist"), w.url("/cast/feed.xml")+" TBProxy TestCast\n")

	before := w.proxy.status(t)
	stdout, _ := appRun(t, env, home, "podget", "--dir_config", conf, "--verbosity", "2")
	t.Logf("podget:\n%s", appLastLines(stdout, 12))
	st := w.waitTransformed(t, before, int64(len(eps)))
	if st.Passed == before.Passed {
		t.Error("the feed did not pass through the proxy")
	}
	for i, ep := range eps {
		got := filepath.Join(lib, "TBProxy", "TestCast", filepath.Base(ep.path))
		if _, err := os.Stat(got); err != nil {
			t.Fatalf("podget did not save episode %d: %v\n%s", i+1, err, stdout)
		}
		sameFile(t, got, filepath.Join(dir, filepath.FromSlash(ep.path)))
		w.checkServedFromSwarm(t, ep.path, "Wget/")
	}
	if errs, err := os.ReadFile(filepath.Join(home, "log", "errors")); err == nil && len(strings.TrimSpace(string(errs))) > 0 {
		t.Errorf("podget logged errors:\n%s", errs)
	}
}

// TestAppAptGet: apt-get, with its configuration, lists, cache and state
// all in a temporary directory and the proxy as Acquire::http::Proxy,
// updates from a flat repository that `tbproxy publish` serves and
// downloads a .deb from it; apt's own checksum passes and the package
// arrives byte for byte from the swarm.
func TestAppAptGet(t *testing.T) {
	for _, tool := range []string{"apt-get", "dpkg-deb", "dpkg-scanpackages"} {
		requireTool(t, tool)
	}
	requireTool(t, "curl")
	const pkg = "tbproxy-test-fixture"
	repo := t.TempDir()
	debName := pkg + "_1.0_all.deb"

	// A package of 3 MiB of incompressible bytes, stored uncompressed, so
	// the .deb is above the publisher's default --min-size.
	root := filepath.Join(t.TempDir(), pkg)
	makeContent(t, root, "usr/share/"+pkg+"/blob", 3<<20+555, 8200)
	appWriteFile(t, filepath.Join(root, "DEBIAN", "control"), "Package: "+pkg+"\nVersion: 1.0\nArchitecture: all\n"+
		"Maintainer: tbproxy tests <tests@tbproxy.invalid>\nDescription: test fixture for tbproxy\n random bytes\n")
	env := toolEnv(t)
	appRun(t, env, repo, "dpkg-deb", "--root-owner-group", "-Znone", "--build", root, filepath.Join(repo, debName))
	packages, _ := appRun(t, env, repo, "dpkg-scanpackages", "--multiversion", ".", "/dev/null")
	appWriteFile(t, filepath.Join(repo, "Packages"), packages)
	t.Logf("Packages:\n%s", packages)

	w := newAppWorld(t, repo, []string{"/" + debName})

	// apt reads APT_CONFIG first, so that file can move the parts
	// directory (apt.conf.d) and the main apt.conf away from /etc; the
	// -o options then put every list, cache, lock and state file in
	// aptDir.
	aptDir := t.TempDir()
	for _, d := range []string{"apt.conf.d", "preferences.d", "lists/partial", "cache/archives/partial", "state", "log", "work"} {
		if err := os.MkdirAll(filepath.Join(aptDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	appWriteFile(t, filepath.Join(aptDir, "status"), "")
	appWriteFile(t, filepath.Join(aptDir, "sources.list"), "deb [trusted=yes] "+w.pub.url+"/ ./\n")
	appWriteFile(t, filepath.Join(aptDir, "apt.conf"), fmt.Sprintf(
		"Dir::Etc::Parts %q;\nDir::Etc::Main \"/dev/null\";\nDir::Etc::Preferences \"/dev/null\";\nDir::Etc::PreferencesParts %q;\n",
		filepath.Join(aptDir, "apt.conf.d"), filepath.Join(aptDir, "preferences.d")))
	aptEnv := append(toolEnv(t), "APT_CONFIG="+filepath.Join(aptDir, "apt.conf"))
	aptArgs := []string{
		"-o", "Dir::Etc::SourceList=" + filepath.Join(aptDir, "sources.list"),
		"-o", "Dir::Etc::SourceParts=/dev/null",
		"-o", "Dir::State=" + filepath.Join(aptDir, "state"),
		"-o", "Dir::State::Lists=" + filepath.Join(aptDir, "lists"),
		"-o", "Dir::State::status=" + filepath.Join(aptDir, "status"),
		"-o", "Dir::Cache=" + filepath.Join(aptDir, "cache"),
		"-o", "Dir::Log=" + filepath.Join(aptDir, "log"),
		"-o", "Debug::NoLocking=1",
		"-o", "APT::Sandbox::User=root",
		"-o", "Acquire::Languages=none",
		"-o", "Acquire::Retries=0",
		"-o", "Acquire::http::Proxy=" + w.proxy.proxyURL(),
	}

	before := w.proxy.status(t)
	_, stderr := appRun(t, aptEnv, filepath.Join(aptDir, "work"), "apt-get", append(aptArgs, "update")...)
	if strings.Contains(stderr, "E:") || strings.Contains(stderr, "W:") {
		t.Errorf("apt-get update complained:\n%s", stderr)
	}
	lists, _ := filepath.Glob(filepath.Join(aptDir, "lists", "*Packages"))
	if len(lists) != 1 {
		t.Fatalf("apt-get update stored %d Packages lists, want 1", len(lists))
	}
	stdout, stderr := appRun(t, aptEnv, filepath.Join(aptDir, "work"), "apt-get", append(aptArgs, "download", pkg)...)
	t.Logf("apt-get download:\n%s%s", stdout, stderr)
	if strings.Contains(stderr, "E:") {
		t.Errorf("apt-get download complained:\n%s", stderr)
	}
	sameFile(t, filepath.Join(aptDir, "work", debName), filepath.Join(repo, debName))
	w.waitTransformed(t, before, 1)
	w.checkServedFromSwarm(t, "/"+debName, "Debian APT-HTTP")
}

// TestAppHTTPClients: curl, wget and Python's urllib, configured only by
// http_proxy, download a published file and resume partial downloads;
// the resumed requests are ranges the proxy answers from the swarm (206).
func TestAppHTTPClients(t *testing.T) {
	requireTool(t, "curl")
	requireTool(t, "wget")
	requireTool(t, systemPython)
	const path = "/media/show.mp3"
	const size = 40<<20 + 999
	dir := t.TempDir()
	content := makeContent(t, dir, path, size, 8300)
	w := newAppWorld(t, dir, []string{path})
	target := w.url(path)
	env := toolEnv(t, "http_proxy="+w.proxy.proxyURL())

	t.Run("curl -C - after a killed download", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "show.mp3")
		before := w.proxy.status(t)
		// curl's --limit-rate lets the first megabytes through at once
		// and throttles after that, so the kill lands well before the end.
		slow := startProcWith(t, procConfig{env: []string{"http_proxy=" + w.proxy.proxyURL()}},
			"curl", "-sS", "--limit-rate", "512k", "-o", out, target)
		deadline := time.Now().Add(appTimeout)
		for appFileSize(out) < 1<<20 {
			if time.Now().After(deadline) || slow.ExitCode() != -2 {
				t.Fatalf("the throttled curl did not write 1 MiB (has %d bytes, %s):\n%s", appFileSize(out), slow.state(), slow.Tail(10))
			}
			time.Sleep(pollInterval)
		}
		if err := syscall.Kill(-slow.PID(), syscall.SIGKILL); err != nil {
			t.Fatalf("killing the throttled curl (%s): %v", slow.state(), err)
		}
		<-slow.Done()
		partial := appFileSize(out)
		if partial >= size {
			t.Fatalf("the throttled curl got the whole file (%d bytes) before it was killed", partial)
		}
		w.proxy.waitIdle(t)

		hdr := out + ".headers"
		code, _ := appRun(t, env, "", "curl", "-sS", "-C", "-", "-o", out, "-D", hdr, "-w", "%{http_code}", target)
		h, err := lastHeaderBlock(hdr)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("curl resumed at %d of %d bytes: %s, Content-Range %q, ETag %s", partial, size, code, h.Get("Content-Range"), h.Get("ETag"))
		appCheckResumed(t, code, h, partial, size)
		sameFile(t, out, content)
		w.waitTransformed(t, before, 2)
	})

	t.Run("wget -c after curl -r", func(t *testing.T) {
		outDir := t.TempDir()
		out := filepath.Join(outDir, "show.mp3")
		before := w.proxy.status(t)
		half := int64(size / 2)
		code, _ := appRun(t, env, "", "curl", "-sS", "-r", "0-"+strconv.FormatInt(half-1, 10), "-o", out, "-w", "%{http_code}", target)
		if code != "206" || appFileSize(out) != half {
			t.Fatalf("curl -r 0-%d: status %s, %d bytes", half-1, code, appFileSize(out))
		}
		// wget prints the response headers (-S) on stderr.
		_, stderr := appRun(t, env, "", "wget", "--no-config", "-S", "-nv", "-c", "-P", outDir, target)
		status, h := appWgetLastResponse(stderr)
		t.Logf("wget -c from %d of %d bytes: %d, Content-Range %q, ETag %s", half, size, status, h.Get("Content-Range"), h.Get("ETag"))
		appCheckResumed(t, strconv.Itoa(status), h, half, size)
		sameFile(t, out, content)
		w.waitTransformed(t, before, 2)
	})

	t.Run("python urllib", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "show.mp3")
		before := w.proxy.status(t)
		split := int64(size/3 + 12345)
		stdout, _ := appRun(t, env, "", systemPython, filepath.Join("testdata", "apps", "urlget.py"), target, out, strconv.FormatInt(split, 10))
		var res struct {
			Proxies  map[string]string `json:"proxies"`
			Requests []struct {
				Status       int    `json:"status"`
				ContentRange string `json:"content_range"`
				ETag         string `json:"etag"`
				Received     int64  `json:"received"`
			} `json:"requests"`
		}
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatalf("urlget.py printed %q: %v", stdout, err)
		}
		t.Logf("urllib: proxies %v, requests %+v", res.Proxies, res.Requests)
		if res.Proxies["http"] != w.proxy.proxyURL() {
			t.Errorf("urllib found the proxies %v, want http: %s", res.Proxies, w.proxy.proxyURL())
		}
		want := []struct {
			status int
			cr     string
			n      int64
		}{
			{http.StatusOK, "", size},
			{http.StatusPartialContent, fmt.Sprintf("bytes 0-%d/%d", split-1, size), split},
			{http.StatusPartialContent, fmt.Sprintf("bytes %d-%d/%d", split, size-1, size), size - split},
		}
		if len(res.Requests) != len(want) {
			t.Fatalf("urlget.py made %d requests, want %d", len(res.Requests), len(want))
		}
		for i, r := range res.Requests {
			if r.Status != want[i].status || r.ContentRange != want[i].cr || r.Received != want[i].n || !strings.HasPrefix(r.ETag, `"bt-`) {
				t.Errorf("request %d: status %d, Content-Range %q, %d bytes, ETag %s; want %d, %q, %d bytes and a bt- ETag",
					i, r.Status, r.ContentRange, r.Received, r.ETag, want[i].status, want[i].cr, want[i].n)
			}
		}
		sameFile(t, out+".whole", content)
		sameFile(t, out, content)
		w.waitTransformed(t, before, 3)
		w.checkServedFromSwarm(t, path, "tbproxy-test-urllib")
	})
}

// appCheckResumed fails unless a resumed download got 206 with the rest of
// the file from offset, from the swarm (tbproxy's content-addressed ETag).
func appCheckResumed(t testing.TB, code string, h http.Header, offset, size int64) {
	t.Helper()
	if code != "206" {
		t.Errorf("the resumed request got %s, want 206", code)
	}
	if want := fmt.Sprintf("bytes %d-%d/%d", offset, size-1, size); h.Get("Content-Range") != want {
		t.Errorf("Content-Range %q, want %q", h.Get("Content-Range"), want)
	}
	if !strings.HasPrefix(h.Get("ETag"), `"bt-`) {
		t.Errorf("ETag %q: the range was not served from the swarm", h.Get("ETag"))
	}
}

// appWgetStatusLine matches the status line wget -S prints, indented.
var appWgetStatusLine = regexp.MustCompile(`^\s+HTTP/\d(?:\.\d)? (\d{3})`)

// appWgetLastResponse parses the last response wget -S printed on stderr.
func appWgetLastResponse(stderr string) (int, http.Header) {
	status, h := 0, http.Header{}
	for _, line := range strings.Split(stderr, "\n") {
		if m := appWgetStatusLine.FindStringSubmatch(line); m != nil {
			status, _ = strconv.Atoi(m[1])
			h = http.Header{}
			continue
		}
		if !strings.HasPrefix(line, "  ") || status == 0 {
			continue
		}
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			h.Add(k, strings.TrimSpace(v))
		}
	}
	return status, h
}

// appChromiumPath is the Chromium binary itself. Debian's /usr/bin/chromium
// is a shell wrapper that adds flags from /etc/chromium.d (among them
// --enable-remote-extensions); the test runs the binary behind it with
// only its own flags.
func appChromiumPath(t testing.TB) string {
	t.Helper()
	requireTool(t, "chromium")
	const debian = "/usr/lib/chromium/chromium"
	if _, err := os.Stat(debian); err == nil {
		return debian
	}
	p, _ := exec.LookPath("chromium")
	return p
}

// appDevToolsLine is what Chromium prints once its DevTools endpoint listens.
var appDevToolsLine = regexp.MustCompile(`DevTools listening on (ws://127\.0\.0\.1:\d+/\S+)`)

// appStartChromium starts headless Chromium with tbproxy as its only proxy
// (loopback included: Chromium bypasses proxies for loopback unless told
// otherwise) but for the host:port addresses in direct, with every
// background service it has switched off, and returns a chromedp context
// attached to it. The harness stops the process group when the test ends.
func appStartChromium(t *testing.T, proxyURL string, direct ...string) context.Context {
	t.Helper()
	bin := appChromiumPath(t)
	var (
		once  sync.Once
		wsURL = make(chan string, 1)
	)
	args := []string{
		"--headless",
		"--no-sandbox",
		"--disable-gpu",
		"--disable-quic",
		"--no-first-run",
		"--no-default-browser-check",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		"--disable-default-apps",
		"--disable-extensions",
		"--disable-breakpad",
		"--disable-domain-reliability",
		"--disable-client-side-phishing-detection",
		"--disable-features=MediaRouter,OptimizationHints,Translate,AutofillServerCommunication,DialMediaRouteProvider,NetworkTimeServiceQuerying",
		"--disable-dev-shm-usage",
		"--metrics-recording-only",
		"--no-pings",
		"--password-store=basic",
		"--use-mock-keychain",
		"--mute-audio",
		"--hide-scrollbars",
		"--window-size=1280,900",
		"--user-data-dir=" + t.TempDir(),
		// Loopback goes through the proxy, and only loopback (but the
		// direct addresses). Chromium bypasses proxies for loopback
		// unless a rule <-loopback> says otherwise, and later rules win
		// over earlier ones: here every host but loopback is bypassed,
		// that is fetched directly, and no name resolves, so whatever a
		// background service still asks for fails in the browser and
		// never reaches the network through the proxy.
		"--proxy-server=" + proxyURL,
		"--proxy-bypass-list=" + strings.Join(append([]string{"*", "<-loopback>"}, direct...), ";"),
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"--remote-debugging-address=127.0.0.1",
		"--remote-debugging-port=0",
		"about:blank",
	}
	proc := startProcWith(t, procConfig{onLine: func(line string) {
		if m := appDevToolsLine.FindStringSubmatch(line); m != nil {
			once.Do(func() { wsURL <- m[1] })
		}
	}}, bin, args...)
	var ws string
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case ws = <-wsURL:
	case <-proc.Done():
		t.Fatalf("chromium exited (%s) before its DevTools endpoint listened:\n%s", proc.state(), proc.Tail(30))
	case <-timer.C:
		t.Fatalf("chromium's DevTools endpoint did not listen within %v:\n%s", startTimeout, proc.Tail(30))
	}
	ctx, cancel := context.WithTimeout(t.Context(), appTimeout)
	t.Cleanup(cancel)
	allocCtx, cancelAlloc := remote.NewAllocator(ctx, ws, remote.NoModifyURL)
	t.Cleanup(cancelAlloc)
	cctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelTab)
	return cctx
}

// appBrowserDownload makes the browser download rawURL into dir and returns
// the file's path once Chromium reports the download complete.
func appBrowserDownload(t *testing.T, ctx context.Context, rawURL, dir string) string {
	t.Helper()
	progress := chromedp.Events(ctx, browser.DownloadProgress)
	events := true
	if _, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior:      browser.SetDownloadBehaviorBehaviorAllowAndName,
		DownloadPath:  dir,
		EventsEnabled: &events,
	}); err != nil {
		t.Fatalf("Browser.setDownloadBehavior: %v", err)
	}
	// A navigation that turns into a download ends with net::ERR_ABORTED.
	res, err := chromedp.Call(ctx, page.Navigate, page.NavigateParams{URL: rawURL})
	if err != nil {
		t.Fatalf("navigating to %s: %v", rawURL, err)
	}
	if res.ErrorText != "" && res.ErrorText != "net::ERR_ABORTED" {
		t.Fatalf("navigating to %s: %s", rawURL, res.ErrorText)
	}
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("waiting for the download of %s: %v", rawURL, err)
		}
		switch ev.State {
		case browser.DownloadProgressStateCompleted:
			t.Logf("chromium downloaded %s: %.0f bytes", rawURL, ev.ReceivedBytes)
			return filepath.Join(dir, ev.GUID)
		case browser.DownloadProgressStateCanceled:
			t.Fatalf("chromium canceled the download of %s after %.0f of %.0f bytes", rawURL, ev.ReceivedBytes, ev.TotalBytes)
		}
	}
	t.Fatalf("the download events of %s ended", rawURL)
	return ""
}

// TestAppChromium: headless Chromium with tbproxy as its proxy downloads
// a published file byte for byte from the swarm; then, while a throttled
// curl keeps a second transfer going, the same browser shows tbproxy's
// status page, which names that transfer's file. A screenshot of the page
// is kept in testdata/artifacts.
func TestAppChromium(t *testing.T) {
	requireTool(t, "curl")
	bin := appChromiumPath(t)
	const (
		file     = "/files/dataset.bin"
		slowFile = "/files/slow-stream.bin"
		slowRate = "2M"
	)
	dir := t.TempDir()
	content := makeContent(t, dir, file, 20<<20+4242, 8400)
	makeContent(t, dir, slowFile, 64<<20, 8401)
	w := newAppWorld(t, dir, []string{file, slowFile})
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err == nil {
		t.Logf("%s", strings.TrimSpace(string(out)))
	}
	before := w.proxy.status(t)
	// The status page is loaded directly, as browsers do for loopback by
	// default: the proxy refuses proxied requests to its own addresses.
	ctx := appStartChromium(t, w.proxy.proxyURL(), w.proxy.uiAddr)
	got := appBrowserDownload(t, ctx, w.url(file), t.TempDir())
	sameFile(t, got, content)
	st := w.waitTransformed(t, before, 1)
	w.checkServedFromSwarm(t, file, "Chrome/")
	// Chromium's own background requests must not go through the proxy
	// (to the network): besides the download it sent nothing.
	if n := st.Passed - before.Passed; n != 0 {
		t.Errorf("chromium sent %d requests through the proxy besides the download", n)
	}

	// A second transfer that stays active: curl reads at 2 MiB/s.
	slow := startProcWith(t, procConfig{env: []string{"http_proxy=" + w.proxy.proxyURL()}},
		"curl", "-sS", "--limit-rate", slowRate, "-o", "/dev/null", w.url(slowFile))
	name := filepath.Base(slowFile)
	deadline := time.Now().Add(proxyIdleTimeout)
	for active := false; !active; {
		for _, tr := range w.proxy.status(t).Transfers {
			active = active || (strings.HasSuffix(tr.URL, slowFile) && tr.Sent > 0)
		}
		if !active && (time.Now().After(deadline) || slow.ExitCode() != -2) {
			t.Fatalf("the throttled transfer never became active (curl %s):\n%s", slow.state(), w.proxy.proc.Tail(20))
		}
		time.Sleep(pollInterval)
	}

	// The page may render the transfers on the server or fill them in
	// from /status.json; either way its text must name the file while the
	// transfer runs. Each look reloads the page.
	statusURL := "http://" + w.proxy.uiAddr + "/"
	var text string
	shown := false
	deadline = time.Now().Add(proxyIdleTimeout)
	for !shown && time.Now().Before(deadline) && slow.ExitCode() == -2 {
		if err := chromedp.Do(ctx, chromedp.Navigate(statusURL)); err != nil {
			t.Fatalf("loading the status page %s: %v", statusURL, err)
		}
		for look := time.Now().Add(2 * time.Second); !shown && time.Now().Before(look); {
			var err error
			text, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
			if err != nil {
				t.Fatalf("reading the status page: %v", err)
			}
			shown = strings.Contains(text, name)
			if !shown {
				time.Sleep(4 * pollInterval)
			}
		}
	}
	// Quality 100 makes the whole page a PNG.
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil || !bytes.HasPrefix(shot, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("screenshot of the status page: %v (%d bytes, not a PNG)", err, len(shot))
	} else {
		appSaveArtifact(t, appStatusShot, shot)
	}
	if !shown {
		t.Errorf("the status page %s never named the active transfer's file %q (curl %s); its text:\n%s",
			statusURL, name, slow.state(), text)
	}
	slow.Stop()
	w.proxy.waitIdle(t)
}

// appSaveArtifact writes data at path (relative to the package directory)
// and logs where it went.
func appSaveArtifact(t testing.TB, path string, data []byte) {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(abs, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved %s (%d bytes)", abs, len(data))
}
