//go:build linux

package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseCurl(t *testing.T) {
	tests := []struct {
		name string
		line string
		want curlResult
		ok   bool
	}{
		{name: "whole", line: "bench-curl 200 1048576 0.000512 0.250000",
			want: curlResult{code: 200, size: 1 << 20, ttfb: 512 * time.Microsecond, total: 250 * time.Millisecond}, ok: true},
		{name: "failed transfer", line: "bench-curl 000 0 0.000000 0.001000", want: curlResult{total: time.Millisecond}, ok: true},
		{name: "other output", line: "curl: (7) Failed to connect", ok: false},
		{name: "short", line: "bench-curl 200 12", ok: false},
		{name: "not numbers", line: "bench-curl 200 x 0.1 0.2", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseCurl(tt.line)
			if ok != tt.ok || got != tt.want {
				t.Fatalf("parseCurl(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestWrkResult(t *testing.T) {
	line := `{"requests":30000,"duration_us":3000000,"bytes":1,"errors_connect":1,"errors_read":2,"errors_write":3,` +
		`"errors_status":0,"errors_timeout":4,"latency_p50_us":300,"latency_p99_us":2500,"latency_max_us":9000}`
	var w wrkResult
	if err := json.Unmarshal([]byte(line), &w); err != nil {
		t.Fatal(err)
	}
	if w.rate() != 10000 || w.socketErrors() != 10 || w.P99US != 2500 {
		t.Fatalf("rate %v, socket errors %d, p99 %d", w.rate(), w.socketErrors(), w.P99US)
	}
	if (wrkResult{}).rate() != 0 {
		t.Fatal("a run of no length has a rate")
	}
}

func TestStatCPU(t *testing.T) {
	tests := []struct {
		name string
		stat string
		want time.Duration
		bad  bool
	}{
		{name: "plain", stat: "42 (tbproxy) S 1 42 42 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 8 0 100 0 0",
			want: 1750 * time.Millisecond},
		{name: "name with spaces and parentheses", stat: "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 0 0",
			want: 70 * time.Millisecond},
		{name: "short", stat: "7 (x) R 1 2", bad: true},
		{name: "no name", stat: "garbage", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := statCPU([]byte(tt.stat))
			if tt.bad {
				if err == nil {
					t.Fatalf("statCPU = %v, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("statCPU = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestChangedTops(t *testing.T) {
	out := " M proxy/proxy.go\n M go.mod\n?? proxy/ui/\nR  a/x.go -> b/x.go\n M proxy/local.go\n"
	got := strings.Join(changedTops([]byte(out)), ",")
	if want := "b/,go.mod,proxy/"; got != want {
		t.Fatalf("changedTops = %q, want %q", got, want)
	}
}

func TestNginxConf(t *testing.T) {
	conf, err := nginxConf("/tmp/n", 8000, "/tmp/www", "/tmp/content", "/tmp/torrents", "", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"listen 127.0.0.1:8000;",
		"user root;",
		`location /plain/ { alias "/tmp/content/"; }`,
		`"~application/x-bittorrent" 1;`,
		"rewrite ^/ws/(.*)$ /torrents/$1.torrent last;",
		`location /torrents/ { internal; add_header Vary Accept; alias "/tmp/torrents/"; }`,
		"access_log off;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, conf)
		}
	}
	if conf, _ := nginxConf("/tmp/n", 8000, "/w", "/c", "/t", "", false); strings.Contains(conf, "user ") {
		t.Errorf("nginx.conf names a user when not root:\n%s", conf)
	}
	if _, err := nginxConf("/tmp/$x", 8000, "/w", "/c", "/t", "", false); err == nil {
		t.Error("a path with $ was accepted")
	}
	logged, err := nginxConf("/tmp/n", 8000, "/w", "/c", "/t", "/tmp/n/access.log", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"log_format bench '$status $bytes_sent $body_bytes_sent';",
		`access_log "/tmp/n/access.log" bench;`,
	} {
		if !strings.Contains(logged, want) {
			t.Errorf("nginx.conf with an access log lacks %q:\n%s", want, logged)
		}
	}
	if strings.Contains(logged, "access_log off") {
		t.Errorf("nginx.conf with an access log turns it off:\n%s", logged)
	}
}

func TestParseAccessLog(t *testing.T) {
	got, err := parseAccessLog([]byte("206 1048835 1048576\n206 2097415 2097152\n\n200 1073742080 1073741824\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := httpLoad{requests: 3, sent: 1048835 + 2097415 + 1073742080, body: 1048576 + 2097152 + 1073741824}
	if got != want {
		t.Fatalf("parseAccessLog = %+v, want %+v", got, want)
	}
	if got, err := parseAccessLog(nil); err != nil || got != (httpLoad{}) {
		t.Fatalf("parseAccessLog(empty) = %+v, %v", got, err)
	}
	for _, bad := range []string{"206 100\n", "206 x 10\n", "206 10 20\n", "206 -1 0\n"} {
		if _, err := parseAccessLog([]byte(bad)); err == nil {
			t.Errorf("parseAccessLog(%q) succeeded", bad)
		}
	}
}

func TestPage(t *testing.T) {
	for _, size := range []int{100, 4096, 4097} {
		if p := page(size); len(p) != size || !strings.HasSuffix(string(p), "</pre>\n") {
			t.Errorf("page(%d) has %d bytes", size, len(p))
		}
	}
}

// TestRelayCounts sends a known number of bytes each way through a relay:
// it passes them all on, counts only the server's, and closes cleanly.
func TestRelayCounts(t *testing.T) {
	const fromServer, fromClient = 3<<20 + 17, 1000
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- -1
			return
		}
		defer c.Close()
		n, _ := io.CopyN(io.Discard, c, fromClient)
		m, _ := io.CopyN(c, zeros{}, fromServer)
		served <- n + m
	}()
	r, err := newRelay(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	c, err := net.Dial("tcp", hostPort(r.port()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.CopyN(c, zeros{}, fromClient); err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, c)
	if err != nil || got != fromServer {
		t.Fatalf("client read %d bytes, %v; want %d", got, err, fromServer)
	}
	if n := <-served; n != fromClient+fromServer {
		t.Fatalf("server moved %d bytes", n)
	}
	if n := r.served.Load(); n != fromServer {
		t.Fatalf("relay counted %d bytes, want %d", n, fromServer)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { r.close(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("relay.close did not return")
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

func TestTallyAttempt(t *testing.T) {
	ctx := context.Background()
	spent, cancel := context.WithCancel(ctx)
	cancel()
	fail := func(context.Context) error { return io.ErrUnexpectedEOF }
	ok := func(context.Context) error { return nil }
	slow := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	tests := []struct {
		name    string
		budget  context.Context
		limit   time.Duration
		runs    []func(context.Context) error
		errs    int
		skipped int
		hit     bool
		errText string
	}{
		{name: "all good", budget: ctx, runs: []func(context.Context) error{ok, ok}},
		{name: "skipped after a failure", budget: ctx, runs: []func(context.Context) error{fail, ok, ok}, errs: 1, skipped: 2, errText: "run 1: unexpected EOF"},
		{name: "budget spent", budget: spent, runs: []func(context.Context) error{ok}, skipped: 1, hit: true},
		{name: "own limit", budget: ctx, limit: 10 * time.Millisecond, runs: []func(context.Context) error{slow}, errs: 1, errText: "run 1: not done within 10ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ta tally
			for i, run := range tt.runs {
				if err := ta.attempt(ctx, tt.budget, i, tt.limit, run); err != nil {
					t.Fatal(err)
				}
			}
			if len(ta.errs) != tt.errs || ta.skipped != tt.skipped || ta.budgetHit != tt.hit {
				t.Fatalf("got %+v", ta)
			}
			if tt.errText != "" && !strings.HasPrefix(ta.errs[0], tt.errText) {
				t.Fatalf("error %q, want it to start with %q", ta.errs[0], tt.errText)
			}
		})
	}
}

func TestListeningPort(t *testing.T) {
	for line, want := range map[string]int{
		"tbproxy is listening on 127.0.0.1:40687":             40687,
		"tbproxy is listening on 127.0.0.1:0":                 0,
		"  use it:   export http_proxy=http://127.0.0.1:8080": 0,
		"tbproxy is listening on nowhere":                     0,
		"minproxy is listening on 127.0.0.1:40688":            0, // another server's line
	} {
		if got, ok := listeningPort("tbproxy", line); got != want || ok != (want != 0) {
			t.Errorf("listeningPort(%q) = %d, %v; want %d", line, got, ok, want)
		}
	}
}
