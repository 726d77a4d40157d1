//go:build linux

package integration

import (
	"context"
	"crypto/sha1"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// ltInfo is what testdata/ltinfo.py reports of a torrent, through
// python3-libtorrent.
type ltInfo struct {
	InfoHash    string `json:"info_hash"`
	Name        string `json:"name"`
	PieceLength int64  `json:"piece_length"`
	NumPieces   int    `json:"num_pieces"`
	TotalLength int64  `json:"total_length"`
	Private     bool   `json:"private"`
	Files       []struct {
		Path   string `json:"path"`
		Length int64  `json:"length"`
	} `json:"files"`
	Trackers [][]string `json:"trackers"`
	WebSeeds []string   `json:"web_seeds"`
	Comment  string     `json:"comment"`
}

func libtorrentInfo(t *testing.T, torrentPath string) ltInfo {
	t.Helper()
	out, err := exec.Command(systemPython, "testdata/ltinfo.py", torrentPath).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("ltinfo.py: %v: %s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var info ltInfo
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("ltinfo.py output %q: %v", out, err)
	}
	return info
}

// TestBuilderAcceptedByLibtorrent builds torrents with our builder and has
// python3-libtorrent load them: same info-hash, files, pieces, trackers and
// web seeds.
func TestBuilderAcceptedByLibtorrent(t *testing.T) {
	requireTool(t, "libtorrent")
	dir := t.TempDir()
	single := makeContent(t, dir, "episode 1.mp3", 3<<20+77, 1)
	multi := filepath.Join(dir, "album")
	makeContent(t, multi, "01 intro.flac", 700_000, 2)
	makeContent(t, multi, "disc 2/02 naïve.flac", 1<<20, 3)
	makeContent(t, multi, "cover.jpg", 5_000, 4)
	if err := os.WriteFile(filepath.Join(multi, "empty.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		opts metainfo.BuildOptions
	}{
		{"single file auto piece length", single, metainfo.BuildOptions{
			Trackers: [][]string{{"http://127.0.0.1:6969/announce"}},
		}},
		{"single file 16 KiB private", single, metainfo.BuildOptions{
			PieceLength: 16 << 10, Private: true, Comment: "made by tbproxy",
			Trackers: [][]string{{"http://127.0.0.1:6969/announce", "http://127.0.0.1:6970/announce"}, {"udp://127.0.0.1:6969"}},
		}},
		{"directory 64 KiB with web seeds", multi, metainfo.BuildOptions{
			PieceLength: 64 << 10,
			URLList:     []string{"http://127.0.0.1:8000/files/", "http://127.0.0.1:8001/"},
		}},
		{"directory 1 MiB dated", multi, metainfo.BuildOptions{
			PieceLength: 1 << 20, CreationDate: time.Unix(1_700_000_000, 0),
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := metainfo.Build(context.Background(), tt.path, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			data, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			torrent := filepath.Join(dir, strconv.Itoa(i)+".torrent")
			if err := os.WriteFile(torrent, data, 0o644); err != nil {
				t.Fatal(err)
			}
			lt := libtorrentInfo(t, torrent)
			if lt.InfoHash != m.InfoHash.String() {
				t.Errorf("libtorrent info-hash %s, ours %s", lt.InfoHash, m.InfoHash)
			}
			info := &m.Info
			if lt.Name != info.Name || lt.PieceLength != info.PieceLength || lt.NumPieces != info.NumPieces() ||
				lt.TotalLength != info.TotalLength || lt.Private != info.Private || lt.Comment != m.Comment {
				t.Errorf("libtorrent sees %+v", lt)
			}
			if len(lt.Files) != len(info.Files) {
				t.Fatalf("libtorrent sees %d files, we built %d", len(lt.Files), len(info.Files))
			}
			for j, f := range info.Files {
				want := f.DisplayPath()
				if info.MultiFile {
					want = strings.Join(f.Path[1:], "/")
				}
				if lt.Files[j].Path != want || lt.Files[j].Length != f.Length {
					t.Errorf("file %d: libtorrent %q %d, ours %q %d", j, lt.Files[j].Path, lt.Files[j].Length, want, f.Length)
				}
			}
			if len(m.Trackers()) > 0 && !reflect.DeepEqual(lt.Trackers, m.Trackers()) {
				t.Errorf("trackers: libtorrent %q, ours %q", lt.Trackers, m.Trackers())
			}
			if len(m.URLList) > 0 && !reflect.DeepEqual(lt.WebSeeds, m.URLList) {
				t.Errorf("web seeds: libtorrent %q, ours %q", lt.WebSeeds, m.URLList)
			}
		})
	}
}

// BenchmarkBuildVsMktorrent hashes the same 1 GiB file at 256 KiB pieces
// with our builder and with mktorrent, in the same run, and reports the
// ratio of their times (mktorrent ÷ ours: above 1 means we are faster).
// mktorrent gets one hashing thread per core, like the builder.
func BenchmarkBuildVsMktorrent(b *testing.B) {
	requireTool(b, "mktorrent")
	dir := b.TempDir()
	content := makeContent(b, dir, "big.bin", 1<<30, 7)
	const pieceLen = 256 << 10
	// Warm the page cache so both read from memory, not the disk.
	if _, err := metainfo.Build(context.Background(), content, metainfo.BuildOptions{PieceLength: pieceLen}); err != nil {
		b.Fatal(err)
	}
	var ours, theirs time.Duration
	for b.Loop() {
		start := time.Now()
		m, err := metainfo.Build(context.Background(), content, metainfo.BuildOptions{PieceLength: pieceLen})
		if err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)

		out := filepath.Join(dir, "mk.torrent")
		os.Remove(out)
		start = time.Now()
		cmd := exec.Command("mktorrent", "-l", "18", "-t", strconv.Itoa(runtime.NumCPU()), "-d", "-o", out, content)
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("mktorrent: %v: %s", err, msg)
		}
		theirs += time.Since(start)
		data, err := os.ReadFile(out)
		if err != nil {
			b.Fatal(err)
		}
		mk, err := metainfo.Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		if !reflect.DeepEqual(mk.Info.Pieces, m.Info.Pieces) {
			b.Fatal("mktorrent's piece hashes differ from ours")
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(1<<30)/ours.Seconds()*n/1e6, "ours-MB/s")
	b.ReportMetric(float64(1<<30)/theirs.Seconds()*n/1e6, "mktorrent-MB/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "speedup")
	// The ceiling: SHA-1 alone over 1 GiB already in memory, on every
	// core, measured in the same run. Builders that reach it cannot be
	// told apart by speed.
	ceiling := sha1Ceiling(runtime.NumCPU(), pieceLen)
	b.ReportMetric(ceiling/1e6, "sha1-ceiling-MB/s")
}

// sha1Ceiling hashes 1 GiB of in-memory pieces on workers goroutines and
// returns bytes per second.
func sha1Ceiling(workers int, pieceLen int) float64 {
	buf := make([]byte, pieceLen)
	const total = 1 << 30
	per := total / pieceLen / workers
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range per {
				sha1.Sum(buf)
			}
		})
	}
	wg.Wait()
	return float64(per*workers*pieceLen) / time.Since(start).Seconds()
}
