//go:build linux

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// TestWithWebSeed checks that the mixed swarm's torrent is the same
// torrent, with nginx's URL as its only web seed.
func TestWithWebSeed(t *testing.T) {
	dir := t.TempDir()
	content := filepath.Join(dir, "bench.bin")
	if err := os.WriteFile(content, bytes.Repeat([]byte("tbproxy "), 40000), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := metainfo.Build(context.Background(), content, metainfo.BuildOptions{PieceLength: 32 << 10, URLList: []string{"http://elsewhere/"}})
	if err != nil {
		t.Fatal(err)
	}
	orig := torrent{path: "unused", pieceLen: 32 << 10, meta: m}
	const url = "http://127.0.0.1:8000/plain/bench.bin"
	got, err := withWebSeed(orig, url, filepath.Join(dir, "mixed.torrent"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(got.path)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := metainfo.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.InfoHash != m.InfoHash || !slices.Equal(parsed.URLList, []string{url}) || got.pieceLen != orig.pieceLen {
		t.Fatalf("got info-hash %s url-list %q piece length %d; want %s [%q] %d",
			parsed.InfoHash, parsed.URLList, got.pieceLen, m.InfoHash, url, orig.pieceLen)
	}
	if !slices.Equal(m.URLList, []string{"http://elsewhere/"}) {
		t.Fatalf("the original torrent's url-list changed to %q", m.URLList)
	}
	if _, err := withWebSeed(torrent{}, url, filepath.Join(dir, "x.torrent")); err == nil {
		t.Fatal("a torrent without metainfo was accepted")
	}
}

// TestRenderMixed checks the table's web seed columns and the target
// line's ratio of medians.
func TestRenderMixed(t *testing.T) {
	const size = 1 << 30
	at := func(secs float64, body int64, reqs int) sample {
		d := time.Duration(secs * float64(time.Second))
		return sample{total: d, first: d / 100, firstKnown: true, web: &httpLoad{requests: reqs, sent: body + 300, body: body}}
	}
	res := &mixedResult{size: size, pieceLen: 1 << 20, webPath: "/plain/bench.bin", rows: []*row{
		{leecher: mixedLeecher{inner: swarmLeecher{webSeedMode: "sparing"}}, samples: []sample{at(1.0, 0, 0), at(1.2, 0, 0), at(0.8, 0, 0)}},
		{leecher: mixedLeecher{inner: swarmLeecher{webSeedMode: "always"}}, samples: []sample{at(0.5, size/2, 40)}},
		{leecher: mixedLeecher{inner: ltLeecher{}}, samples: []sample{at(1.5, size/4, 60), at(1.5, size/4, 70)}},
	}, webRows: []*row{
		{leecher: mixedLeecher{inner: swarmLeecher{webOnly: true}}, samples: []sample{at(1.0, size, 64)}},
		{leecher: mixedLeecher{inner: curlLeecher{toFile: true}}, samples: []sample{at(0.8, size, 1)}},
		{leecher: mixedLeecher{inner: curlLeecher{}}, samples: []sample{at(0.25, size, 1)}},
	}, pairRows: []*row{
		{leecher: pairedLeecher{inner: swarmLeecher{webOnly: true}}, samples: []sample{at(0.9, size, 64), at(1.1, size, 64), at(1.0, size, 64)}},
		{leecher: pairedLeecher{inner: curlLeecher{toFile: true}}, samples: []sample{at(0.9, size, 1), at(0.85, size, 1)}},
	}}
	var b bytes.Buffer
	renderMixed(&b, config{runs: 3}, res)
	out := b.String()
	for _, want := range []string{
		"## Comparison 1b: mixed swarm (issue #5)",
		"| swarm (tbproxy), web seeds sparing (default) | 3 | 1074 (895–1342) |",
		"| 0.000 | 0 |\n",
		"| swarm (tbproxy), web seeds always | 1 | 2147 |",
		"| 0.500 | 40 |\n",
		"| libtorrent | 2 | 716 |",
		"| 0.250 | 65 (60–70) |\n",
		"| mixed swarm: engine (web seeds always) ÷ libtorrent leecher | 3.00× | ≥ 1.2× | yes |",
		"| engine (default: web seeds rescue only) ÷ libtorrent leecher (no target) | 1.50× | — | — |",
		"### No peers: the web seed alone",
		"| swarm (tbproxy), web seed only | 1 | 1074 |",
		"| curl, to a file | 1 | 1342 |",
		"| web seed only: engine ÷ curl to a file | 0.80× | ≥ 0.8× | yes |",
		"| web seed only: engine ÷ curl to /dev/null (no target) | 0.25× | — | — |",
		"In pairs, back to back against one nginx",
		"| swarm (tbproxy), web seed only, paired | 3 | 1074 (976–1193) |",
		"| curl, to a file, paired | 2 | 1228 (1193–1263) |",
		"| web seed only, paired: engine ÷ curl to a file (no target) | 0.87× | — | — |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	res.rows[2].samples = nil
	res.rows[2].errs = []string{"run 1: boom"}
	res.pairRows[1].samples = nil
	res.pairRows[1].errs = []string{"run 1: warming up: boom"}
	b.Reset()
	renderMixed(&b, config{runs: 3}, res)
	for _, want := range []string{
		"| mixed swarm: engine (web seeds always) ÷ libtorrent leecher | n/a | ≥ 1.2× | — |", "- libtorrent failed, run 1: boom",
		"| web seed only, paired: engine ÷ curl to a file (no target) | n/a | — | — |", "- curl, to a file, paired failed, run 1: warming up: boom",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report without libtorrent lacks %q:\n%s", want, b.String())
		}
	}
}
