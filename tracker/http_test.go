package tracker

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// trickyHash holds every byte class that naive query encoding gets wrong.
var trickyHash = metainfo.Hash{0x00, ' ', '+', '%', '&', '=', '~', '/', '?', '#', 0x7f, 0x80, 0xff, 'a', 'Z', '9', '-', '.', '_', 0x01}

func TestHTTPAnnounceQuery(t *testing.T) {
	peerID := [20]byte([]byte("-TB0001-\x00\xff+% &=abcde"))
	type seen struct {
		rawQuery, path, cookie, auth, ua string
		query                            url.Values
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.URL.RawQuery, r.URL.Path, r.Header.Get("Cookie"), r.Header.Get("Authorization"), r.Header.Get("User-Agent"), r.URL.Query()}
		io.WriteString(w, bdict("interval", bint(900), "peers", bstr(compact("127.0.0.1:6881"))))
	}))
	defer srv.Close()

	// A cookie jar that would send a cookie, and user info that would
	// become basic auth: neither may reach the tracker.
	jar, _ := cookiejar.New(nil)
	su, _ := url.Parse(srv.URL)
	jar.SetCookies(su, []*http.Cookie{{Name: "session", Value: "secret"}})
	hc := &http.Client{Jar: jar}
	defer hc.CloseIdleConnections()

	c := &HTTPClient{Client: hc, UserAgent: "tbproxy-test/1"}
	announce := "http://user:pass@" + su.Host + "/x/announce?passkey=abc#frag"
	req := AnnounceRequest{
		InfoHash: trickyHash, PeerID: peerID, Port: 6881,
		Uploaded: 1, Downloaded: 2, Left: 3, Event: Started, NumWant: 50, Key: 0xDEADBEEF,
		TrackerID: "t i d",
	}
	resp, err := c.Announce(context.Background(), announce, req)
	if err != nil {
		t.Fatal(err)
	}
	if want := addrs("127.0.0.1:6881"); len(resp.Peers) != 1 || resp.Peers[0] != want[0] || resp.Interval != 900*time.Second {
		t.Errorf("response %+v", resp)
	}
	s := <-got
	tests := []struct{ name, got, want string }{
		{"info_hash bytes", s.query.Get("info_hash"), string(trickyHash[:])},
		{"peer_id bytes", s.query.Get("peer_id"), string(peerID[:])},
		{"existing query kept", s.query.Get("passkey"), "abc"},
		{"port", s.query.Get("port"), "6881"},
		{"uploaded", s.query.Get("uploaded"), "1"},
		{"downloaded", s.query.Get("downloaded"), "2"},
		{"left", s.query.Get("left"), "3"},
		{"compact", s.query.Get("compact"), "1"},
		{"event", s.query.Get("event"), "started"},
		{"numwant", s.query.Get("numwant"), "50"},
		{"key", s.query.Get("key"), "DEADBEEF"},
		{"trackerid", s.query.Get("trackerid"), "t i d"},
		{"path", s.path, "/x/announce"},
		{"no cookie", s.cookie, ""},
		{"no authorization", s.auth, ""},
		{"user agent", s.ua, "tbproxy-test/1"},
		{"existing query first", strings.SplitN(s.rawQuery, "&", 2)[0], "passkey=abc"},
		{"no plus in query", boolStr(strings.Contains(s.rawQuery, "+")), "false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q; want %q", tt.got, tt.want)
			}
		})
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func TestHTTPAnnounceOmitsDefaults(t *testing.T) {
	got := make(chan url.Values, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.Query()
		io.WriteString(w, bdict())
	}))
	defer srv.Close()
	c := &HTTPClient{}
	if _, err := c.Announce(context.Background(), srv.URL+"/announce", AnnounceRequest{NoCompact: true, NumWant: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	q := <-got
	for _, k := range []string{"event", "key", "trackerid"} {
		if q.Has(k) {
			t.Errorf("%s sent: %q", k, q.Get(k))
		}
	}
	if q.Get("compact") != "0" || q.Get("numwant") != "3000" {
		t.Errorf("compact=%q numwant=%q; want 0 and 3000 (capped)", q.Get("compact"), q.Get("numwant"))
	}
}

func TestHTTPRedirectStripsCredentials(t *testing.T) {
	auth := make(chan string, 1)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/announce" {
			http.Redirect(w, r, "http://u:p@"+srv.Listener.Addr().String()+"/final", http.StatusFound)
			return
		}
		auth <- r.Header.Get("Authorization")
		io.WriteString(w, bdict())
	}))
	defer srv.Close()
	for _, tt := range []struct {
		name   string
		client *http.Client
	}{{"default client", nil}, {"injected client", &http.Client{}}} {
		t.Run(tt.name, func(t *testing.T) {
			c := &HTTPClient{Client: tt.client}
			if _, err := c.Announce(context.Background(), srv.URL+"/announce", AnnounceRequest{}); err != nil {
				t.Fatal(err)
			}
			if a := <-auth; a != "" {
				t.Errorf("Authorization %q sent after redirect", a)
			}
			if tt.client != nil {
				tt.client.CloseIdleConnections()
			}
		})
	}
}

func TestHTTPGzipBomb(t *testing.T) {
	// One gzip member of 1 MiB of zeros, repeated: a multi-member stream
	// that inflates to 100 MiB and costs nothing to build.
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	zw.Write(make([]byte, 1<<20))
	zw.Close()
	bomb := bytes.Repeat(member.Bytes(), 100)
	zr, _ := gzip.NewReader(bytes.NewReader(bomb))
	if n, err := io.Copy(io.Discard, zr); n != 100<<20 || err != nil {
		t.Fatalf("bomb inflates to %d bytes, %v", n, err)
	}
	t.Logf("gzip of 100 MiB of zeros: %d bytes", len(bomb))

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Type", "text/plain")
		w.Write(bomb)
	}))
	defer srv.Close()

	noDecompress := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer noDecompress.CloseIdleConnections()
	tests := []struct {
		name   string
		client *http.Client
	}{
		{"transport gunzips", nil},
		{"client gunzips itself", noDecompress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &HTTPClient{Client: tt.client}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := c.Announce(context.Background(), srv.URL+"/announce", AnnounceRequest{})
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "larger than 1048576") {
				t.Fatalf("err = %v; want the body cap", err)
			}
			if elapsed > 5*time.Second {
				t.Errorf("took %v", elapsed)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
				t.Errorf("allocated %d MiB", alloc>>20)
			}
		})
	}
}

func TestHTTPBodyCap(t *testing.T) {
	big := strings.Repeat("x", 2<<20)
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"content-length", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) }},
		{"chunked", func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < len(big); i += 4096 {
				io.WriteString(w, big[i:i+4096])
				w.(http.Flusher).Flush()
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			_, err := (&HTTPClient{}).Announce(context.Background(), srv.URL+"/announce", AnnounceRequest{})
			if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "larger than") {
				t.Fatalf("err = %v; want the body cap", err)
			}
		})
	}
}

func TestHTTPErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		check   func(t *testing.T, err error)
	}{
		{
			name:    "404",
			handler: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
			check: func(t *testing.T, err error) {
				var se *StatusError
				if !errors.As(err, &se) || se.StatusCode != 404 || !strings.Contains(err.Error(), "404") {
					t.Errorf("err = %v; want a 404 StatusError", err)
				}
			},
		},
		{
			name: "500 with a failure body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(500)
				io.WriteString(w, bdict("failure reason", bstr("down")))
			},
			check: func(t *testing.T, err error) {
				var se *StatusError
				if !errors.As(err, &se) || se.StatusCode != 500 || !strings.Contains(err.Error(), "500") {
					t.Errorf("err = %v; want a 500 StatusError", err)
				}
			},
		},
		{
			name:    "html page",
			handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html><body>hi</body></html>") },
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrBadResponse) {
					t.Errorf("err = %v; want ErrBadResponse", err)
				}
			},
		},
		{
			name: "failure reason",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, bdict("failure reason", bstr("torrent not registered")))
			},
			check: func(t *testing.T, err error) {
				var fe *FailureError
				if !errors.As(err, &fe) || fe.Reason != "torrent not registered" {
					t.Errorf("err = %v; want a FailureError", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			_, err := (&HTTPClient{}).Announce(context.Background(), srv.URL+"/announce", AnnounceRequest{})
			tt.check(t, err)
		})
	}
}

func TestHTTPContextCancel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers on its own
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := (&HTTPClient{}).Announce(ctx, srv.URL+"/announce", AnnounceRequest{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v; want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned after %v", d)
	}
}

func TestScrapeURL(t *testing.T) {
	tests := []struct {
		name, in, want string
		err            error
	}{
		{"plain", "http://t.example/announce", "http://t.example/scrape", nil},
		{"php with query", "https://t.example/x/announce.php?passkey=a%20b", "https://t.example/x/scrape.php?passkey=a%20b", nil},
		{"escaped path kept", "http://t.example/a%2Fb/announce", "http://t.example/a%2Fb/scrape", nil},
		{"user info and fragment dropped", "http://u:p@t.example/announce#f", "http://t.example/scrape", nil},
		{"not announce", "http://t.example/a", "", ErrNoScrape},
		{"announce not last", "http://t.example/announce/x", "", ErrNoScrape},
		{"prefix inside segment", "http://t.example/xannounce", "", ErrNoScrape},
		{"no path", "http://t.example", "", ErrNoScrape},
		{"udp scheme", "udp://t.example:1/announce", "", ErrUnsupportedScheme},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ScrapeURL(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v; want %v", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestHTTPScrape(t *testing.T) {
	other := metainfo.Hash{9}
	unknown := metainfo.Hash{8}
	got := make(chan *url.URL, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL
		io.WriteString(w, bdict("files", bdict(
			string(trickyHash[:]), bdict("complete", bint(5), "downloaded", bint(50), "incomplete", bint(2)),
			string(other[:]), bdict("complete", bint(1)), // not asked for
		)))
	}))
	defer srv.Close()
	res, err := (&HTTPClient{}).Scrape(context.Background(), srv.URL+"/announce?pk=1", []metainfo.Hash{trickyHash, unknown})
	if err != nil {
		t.Fatal(err)
	}
	u := <-got
	if u.Path != "/scrape" || u.Query().Get("pk") != "1" {
		t.Errorf("scrape url %v", u)
	}
	if hs := u.Query()["info_hash"]; len(hs) != 2 || hs[0] != string(trickyHash[:]) || hs[1] != string(unknown[:]) {
		t.Errorf("info_hash values %q", hs)
	}
	if len(res) != 1 || res[trickyHash] != (ScrapeResponse{Complete: 5, Downloaded: 50, Incomplete: 2}) {
		t.Errorf("result %v", res)
	}

	t.Run("bounds", func(t *testing.T) {
		c := &HTTPClient{}
		if _, err := c.Scrape(context.Background(), srv.URL+"/announce", nil); err == nil {
			t.Error("no error for zero hashes")
		}
		if _, err := c.Scrape(context.Background(), srv.URL+"/announce", make([]metainfo.Hash, MaxScrapeHashes+1)); err == nil {
			t.Error("no error for too many hashes")
		}
		if _, err := c.Scrape(context.Background(), srv.URL+"/a", []metainfo.Hash{{}}); !errors.Is(err, ErrNoScrape) {
			t.Errorf("err = %v; want ErrNoScrape", err)
		}
	})
}

func TestHTTPBadURL(t *testing.T) {
	tests := []struct{ name, url string }{
		{"ftp", "ftp://127.0.0.1/announce"},
		{"no host", "http:///announce"},
		{"junk", "http://[::1/announce"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := (&HTTPClient{}).Announce(context.Background(), tt.url, AnnounceRequest{}); err == nil {
				t.Error("no error")
			}
		})
	}
}
