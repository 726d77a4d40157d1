// Command swarmget is the bench harness's leecher for tbproxy's own engine.
// It downloads one torrent from the peers it is given the way tbproxy
// serves an HTTP client: a lazy torrent, one Reader from offset 0, read
// sequentially to the end and thrown away. It prints one JSON object with
// its timings and the engine's counters, and exits.
//
// Usage:
//
//	swarmget --torrent FILE --dir DIR --peer 127.0.0.1:PORT [--peer ...]
//	         [--buf 32768] [--timeout 10m] [--cpuprofile FILE] [--memory]
//	         [--web-seed-mode sparing|always|rescue-only]
//	swarmget --torrent FILE --dir DIR --web-only
//
// The torrent's url-list (BEP 19 web seeds) is used as the engine uses it:
// with --web-seed-mode sparing (the default, swarm.WebSeedRescue) only
// while peers stall, with always (swarm.WebSeedAlways) alongside them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// firstMark is how many bytes the Reader must return for "first MiB".
const firstMark = 1 << 20

// options are swarmget's flags.
type options struct {
	torrent    string
	dir        string
	peers      []netip.AddrPort
	bufSize    int
	memory     bool // keep the torrent in a swarm.MemoryStorage instead of on disk
	timeout    time.Duration
	cpuProfile string
	webOnly    bool // no peers: the torrent's url-list is the only source
	webMode    swarm.WebSeedMode
}

// report is the JSON line swarmget prints. Times are Unix nanoseconds so
// that the harness can compare them with its own clock.
type report struct {
	Start        int64   `json:"start_unix_nano"`     // just before AddTorrent
	FirstMiB     int64   `json:"first_mib_unix_nano"` // the Reader had returned 1 MiB
	Done         int64   `json:"done_unix_nano"`      // the Reader reached EOF
	Bytes        int64   `json:"bytes"`
	FirstMiBSecs float64 `json:"first_mib_seconds"`
	TotalSecs    float64 `json:"total_seconds"`
	Downloaded   int64   `json:"downloaded"`
	FromWebSeeds int64   `json:"from_web_seeds"` // block bytes accepted from the url-list's web seeds
	Wasted       int64   `json:"wasted"`
	HashFailures int     `json:"hash_failures"`
	PeakRSS      int64   `json:"vm_hwm_bytes"` // from /proc/self/status when done; 0 if unknown
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "swarmget:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, opts, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "swarmget:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("swarmget", flag.ContinueOnError)
	fs.StringVar(&o.torrent, "torrent", "", "the .torrent file")
	fs.StringVar(&o.dir, "dir", "", "directory for the data file")
	fs.IntVar(&o.bufSize, "buf", 32<<10, "bytes per Read, as an HTTP response copy would use")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the download to this file")
	fs.BoolVar(&o.webOnly, "web-only", false, "no --peer: download from the torrent's web seeds (url-list) alone")
	fs.BoolVar(&o.memory, "memory", false, "store pieces in memory, not on disk (to tell the engine's costs from the kernel's)")
	fs.TextVar(&o.webMode, "web-seed-mode", swarm.WebSeedRescue,
		"how the url-list's web seeds are used: sparing (only while peers stall; the default), always, or rescue-only")
	fs.Func("peer", "a peer to dial, 127.0.0.1:PORT (repeatable)", func(s string) error {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return err
		}
		o.peers = append(o.peers, ap)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.torrent == "" || o.dir == "":
		return o, errors.New("--torrent and --dir are required")
	case len(o.peers) == 0 && !o.webOnly:
		return o, errors.New("at least one --peer is required (or --web-only)")
	case o.bufSize <= 0:
		return o, errors.New("--buf must be positive")
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", strings.Join(fs.Args(), " "))
	}
	return o, nil
}

func run(ctx context.Context, o options, out io.Writer) (err error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	m, err := loadTorrent(o.torrent)
	if err != nil {
		return err
	}
	st, err := openStorage(o, m)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	if o.cpuProfile != "" {
		stopProfile, err := startProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, stopProfile()) }()
	}
	c, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		return fmt.Errorf("starting client: %w", err)
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	rep, err := download(ctx, c, m, st, o)
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(rep)
}

func openStorage(o options, m *metainfo.MetaInfo) (swarm.Storage, error) {
	if o.memory {
		return swarm.NewMemoryStorage(&m.Info), nil
	}
	return openFileStorage(o.dir, m)
}

func loadTorrent(path string) (*metainfo.MetaInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := metainfo.Read(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return m, nil
}

// download adds the torrent, dials the peers and reads the whole stream.
func download(ctx context.Context, c *swarm.Client, m *metainfo.MetaInfo, st swarm.Storage, o options) (report, error) {
	rep := report{Start: time.Now().UnixNano()}
	t, err := c.AddTorrent(m, st, swarm.TorrentOptions{NoTrackers: true, Lazy: true, WebSeedMode: o.webMode})
	if err != nil {
		return rep, fmt.Errorf("adding torrent: %w", err)
	}
	t.AddPeers(o.peers...)
	r := t.NewReader(ctx)
	n, first, err := drain(r, o.bufSize)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rep, fmt.Errorf("reading at byte %d: %w", n, err)
	}
	rep.Done = time.Now().UnixNano()
	rep.FirstMiB = first.UnixNano()
	rep.Bytes = n
	rep.FirstMiBSecs = float64(rep.FirstMiB-rep.Start) / 1e9
	rep.TotalSecs = float64(rep.Done-rep.Start) / 1e9
	rep.PeakRSS = peakRSS()
	s := t.Stats()
	rep.Downloaded, rep.FromWebSeeds, rep.Wasted, rep.HashFailures = s.Downloaded, s.FromWebSeeds, s.Wasted, s.HashFailures
	if n != m.Info.TotalLength {
		return rep, fmt.Errorf("read %d bytes, want %d", n, m.Info.TotalLength)
	}
	return rep, nil
}

// drain reads r to EOF into io.Discard in bufSize reads, and returns the
// byte count and when the first MiB (or the whole stream, if shorter) had
// been returned.
func drain(r io.Reader, bufSize int) (int64, time.Time, error) {
	buf := make([]byte, bufSize)
	var n int64
	var first time.Time
	for {
		k, err := r.Read(buf)
		if k > 0 {
			if _, werr := io.Discard.Write(buf[:k]); werr != nil {
				return n, first, werr
			}
			n += int64(k)
			if first.IsZero() && n >= firstMark {
				first = time.Now()
			}
		}
		if errors.Is(err, io.EOF) {
			if first.IsZero() {
				first = time.Now()
			}
			return n, first, nil
		}
		if err != nil {
			return n, first, err
		}
	}
}

// startProfile starts a CPU profile and returns the function that ends it.
func startProfile(path string) (func() error, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, errors.Join(fmt.Errorf("starting profile: %w", err), f.Close())
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// peakRSS reads the process's peak resident set (VmHWM) on Linux; 0
// elsewhere.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscan(rest, &kb); err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
