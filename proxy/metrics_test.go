package proxy

import (
	"bytes"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tbproxy/tbproxy/metainfo"
)

// scrape gets base/metrics and parses it as Prometheus text.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, body := getDirect(t, base, "/metrics", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return fams
}

// value is the metric of family name with the label given (or the only
// one), and whether it is there.
func value(fams map[string]*dto.MetricFamily, name, label, labelValue string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		match := label == ""
		for _, l := range m.Label {
			if l.GetName() == label && l.GetValue() == labelValue {
				match = true
			}
		}
		if !match {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.Counter.GetValue(), true
		case dto.MetricType_GAUGE:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

func TestMetricsAfterTransformedRequest(t *testing.T) {
	w := newWorld(t, 1<<20+5)
	resp, body := w.get(t, "/episode.mp3", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, w.content) {
		t.Fatalf("status %d", resp.StatusCode)
	}
	w.get(t, "/page.html", nil)
	fams := scrape(t, w.proxyURL.String())

	types := map[string]dto.MetricType{
		"tbproxy_requests_total":       dto.MetricType_COUNTER,
		"tbproxy_bytes_total":          dto.MetricType_COUNTER,
		"tbproxy_uploaded_bytes_total": dto.MetricType_COUNTER,
		"tbproxy_hash_failures_total":  dto.MetricType_COUNTER,
		"tbproxy_peers":                dto.MetricType_GAUGE,
		"tbproxy_transfers":            dto.MetricType_GAUGE,
	}
	for name, typ := range types {
		if f := fams[name]; f == nil || f.GetType() != typ || f.GetHelp() == "" {
			t.Errorf("%s: %v", name, f)
		}
	}
	exact := []struct {
		name, label, value string
		want               float64
	}{
		{"tbproxy_requests_total", "outcome", "transformed", 1},
		{"tbproxy_requests_total", "outcome", "passed_through", 1},
		{"tbproxy_requests_total", "outcome", "fallback", 0},
		{"tbproxy_bytes_total", "source", "served", float64(len(w.content))},
		{"tbproxy_hash_failures_total", "", "", 0},
		{"tbproxy_transfers", "", "", 0},
	}
	for _, tt := range exact {
		if got, ok := value(fams, tt.name, tt.label, tt.value); !ok || got != tt.want {
			t.Errorf("%s{%s=%q} = %v (present %v), want %v", tt.name, tt.label, tt.value, got, ok, tt.want)
		}
	}
	peers, _ := value(fams, "tbproxy_bytes_total", "source", "peers")
	origin, ok := value(fams, "tbproxy_bytes_total", "source", "origin")
	if !ok || peers == 0 || peers+origin < float64(len(w.content)) {
		t.Errorf("bytes from peers %v and from the origin %v, for a file of %d", peers, origin, len(w.content))
	}
	if _, ok := fams["tbproxy_cache_bytes"]; ok {
		t.Error("cache metrics without a cache")
	}
	if _, ok := value(fams, "tbproxy_peers", "", ""); !ok {
		t.Error("no peers gauge") // two seeds part once both are complete: its value is not checked
	}

	// The totals only grow, and the status page agrees with them.
	again := scrape(t, w.proxyURL.String())
	if p2, _ := value(again, "tbproxy_bytes_total", "source", "peers"); p2 < peers {
		t.Errorf("bytes from peers went down: %v then %v", peers, p2)
	}
	if st := w.proxy.Status(); float64(st.FromPeers) < peers || st.BytesServed != int64(len(w.content)) {
		t.Errorf("status %+v", st)
	}
}

func TestMetricsCache(t *testing.T) {
	_, _, srv := newCacheUI(t)
	fams := scrape(t, srv.URL)
	for _, tt := range []struct {
		name string
		want float64
	}{
		{"tbproxy_cache_bytes", 3 << 30},
		{"tbproxy_cache_limit_bytes", 10 << 30},
		{"tbproxy_cache_torrents", 1},
	} {
		if got, ok := value(fams, tt.name, "", ""); !ok || got != tt.want {
			t.Errorf("%s = %v (present %v), want %v", tt.name, got, ok, tt.want)
		}
	}
}

func TestPieceMap(t *testing.T) {
	all := func(n int) []byte {
		b := make([]byte, (n+7)/8)
		for i := range n {
			b[i/8] |= 0x80 >> (i % 8)
		}
		return b
	}
	tests := []struct {
		name     string
		bitfield []byte
		r        metainfo.PieceRange
		cells    string // the levels, as digits
		verified int
	}{
		{"empty range", nil, metainfo.PieceRange{}, "", 0},
		{"none", []byte{0}, metainfo.PieceRange{Begin: 0, End: 5}, "00000", 0},
		{"first and last", []byte{0b1000_0100}, metainfo.PieceRange{Begin: 0, End: 6}, "400004", 2},
		{"a file's range", []byte{0b0011_1100}, metainfo.PieceRange{Begin: 2, End: 6}, "4444", 4},
		{"short bitfield", []byte{0xff}, metainfo.PieceRange{Begin: 6, End: 10}, "4400", 2},
		{"all of many", all(1000), metainfo.PieceRange{Begin: 0, End: 1000}, strings.Repeat("4", 200), 1000},
		{"half of many", all(500), metainfo.PieceRange{Begin: 0, End: 1000}, strings.Repeat("4", 100) + strings.Repeat("0", 100), 500},
		{"a cell of four, full", all(4), metainfo.PieceRange{Begin: 0, End: 800}, "4" + strings.Repeat("0", 199), 4},
		{"a cell of four, three", all(3), metainfo.PieceRange{Begin: 0, End: 800}, "3" + strings.Repeat("0", 199), 3},
		{"a cell of five, two", all(2), metainfo.PieceRange{Begin: 0, End: 1000}, "2" + strings.Repeat("0", 199), 2},
		{"a cell of five, one", all(1), metainfo.PieceRange{Begin: 0, End: 1000}, "1" + strings.Repeat("0", 199), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cells, verified := pieceMap(tt.bitfield, tt.r)
			var got strings.Builder
			for _, c := range cells {
				got.WriteByte(byte('0' + c))
			}
			if got.String() != tt.cells || verified != tt.verified {
				t.Fatalf("cells %s, verified %d; want %s, %d", got.String(), verified, tt.cells, tt.verified)
			}
		})
	}
}

func TestPieceRuns(t *testing.T) {
	got := pieceRuns([]int{0, 0, 4, 4, 4, 2, 0})
	want := []pieceRun{{0, 2, 0}, {2, 3, 4}, {5, 1, 2}, {6, 1, 0}}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
	if pieceRuns(nil) != nil {
		t.Fatal("runs of nothing")
	}
}

func TestFormatting(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"bytes", formatBytes(0), "0 B"},
		{"bytes below a KiB", formatBytes(1023), "1023 B"},
		{"KiB", formatBytes(1536), "1.5 KiB"},
		{"MiB", formatBytes(5 << 20), "5.0 MiB"},
		{"GiB", formatBytes(3 << 30), "3.0 GiB"},
		{"TiB and beyond", formatBytes(2048 << 40), "2048.0 TiB"},
		{"rate", formatRate(2.5 * (1 << 20)), "2.5 MiB/s"},
		{"percent", formatPercent(0.999), "99%"},
		{"percent clamps", formatPercent(1.5), "100%"},
		{"app: curl", appName("curl/8.5.0"), "curl/8.5.0"},
		{"app: firefox", appName("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"), "Firefox/128.0"},
		{"app: chrome", appName("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"), "Chrome/126.0"},
		{"app: edge", appName("Mozilla/5.0 AppleWebKit/537.36 Chrome/126.0 Safari/537.36 Edg/126.0"), "Edg/126.0"},
		{"app: none", appName(""), "unknown"},
		{"app: long", appName(strings.Repeat("x", 100)), strings.Repeat("x", 39) + "…"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestPlot(t *testing.T) {
	now := int64(10_000_000_000)
	span := plotSpan.Milliseconds()
	h := []HistorySample{
		{Time: now - 2*span, FromPeers: 999, FromOrigin: 999}, // older than the hour: left out
		{Time: now - span, FromPeers: 0, FromOrigin: 0},
		{Time: now - span/2, FromPeers: 50, FromOrigin: 10},
		{Time: now, FromPeers: 100, FromOrigin: 20},
	}
	v := plot(h, now)
	if v.Max != 100 || v.Swarm != "0.0,120.0 300.0,60.0 600.0,0.0" || v.Origin != "0.0,120.0 300.0,108.0 600.0,96.0" || v.Span != "last hour" {
		t.Fatalf("%+v", v)
	}
	// A younger history fills the width, down to five minutes.
	ten := (10 * time.Minute).Milliseconds()
	v = plot(h[2:], now)
	if v.Swarm != "0.0,60.0 600.0,0.0" || v.Span != "last 30 min" {
		t.Fatalf("half an hour: %+v", v)
	}
	v = plot([]HistorySample{{Time: now - ten/10, FromPeers: 10}, {Time: now, FromPeers: 20}}, now)
	if v.Swarm != "480.0,60.0 600.0,0.0" || v.Span != "last 5 min" {
		t.Fatalf("one minute: %+v", v)
	}
	if v := plot(nil, now); v.Max != 1 || v.Swarm != "" || v.Span != "last hour" {
		t.Fatalf("empty: %+v", v)
	}
}
