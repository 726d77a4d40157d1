//go:build linux

package main

import (
	"slices"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int64
		bad  bool
	}{
		{name: "GiB", in: "1GiB", want: 1 << 30},
		{name: "MiB with space", in: "64 MiB", want: 64 << 20},
		{name: "MB", in: "500MB", want: 500e6},
		{name: "bytes", in: "1048576", want: 1 << 20},
		{name: "B suffix", in: "2048B", want: 2048},
		{name: "zero", in: "0", bad: true},
		{name: "negative", in: "-1MiB", bad: true},
		{name: "garbage", in: "lots", bad: true},
		{name: "overflow", in: "9999999999GiB", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if tt.bad {
				if err == nil {
					t.Fatalf("parseSize(%q) = %d, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseFlagsQuick(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		size    int64
		runs    int
		pieces  int
		offload int64
		counts  []int
		wrk     time.Duration
	}{
		{name: "default", args: nil, size: 1 << 30, runs: 3, pieces: 2, offload: 256 << 20, counts: []int{1, 4, 8}, wrk: 10 * time.Second},
		{name: "quick", args: []string{"--quick"}, size: 64 << 20, runs: 1, pieces: 1, offload: 32 << 20, counts: []int{1, 4}, wrk: 3 * time.Second},
		{name: "quick keeps explicit flags",
			args: []string{"--quick", "--runs", "2", "--size", "8MiB", "--offload-size", "2MiB", "--offload-proxies", "2", "--wrk-duration", "5s"},
			size: 8 << 20, runs: 2, pieces: 1, offload: 2 << 20, counts: []int{2}, wrk: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.size != tt.size || cfg.runs != tt.runs || len(cfg.pieceLens) != tt.pieces ||
				cfg.offloadSize != tt.offload || !slices.Equal(cfg.offloadCounts, tt.counts) || cfg.wrkDuration != tt.wrk {
				t.Fatalf("got size %d runs %d pieces %v offload %d counts %v wrk %v",
					cfg.size, cfg.runs, cfg.pieceLens, cfg.offloadSize, cfg.offloadCounts, cfg.wrkDuration)
			}
			if !slices.Equal(cfg.only, allComparisons) {
				t.Fatalf("only = %v, want all", cfg.only)
			}
		})
	}
}

func TestParseOnly(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
		bad  bool
	}{
		{name: "one", in: "offload", want: []string{cmpOffload}},
		{name: "put in running order", in: "passthrough, proxy", want: []string{cmpProxy, cmpPassthrough}},
		{name: "repeated", in: "swarm,swarm", want: []string{cmpSwarm}},
		{name: "mixed runs after swarm", in: "proxy,mixed,swarm", want: []string{cmpSwarm, cmpMixed, cmpProxy}},
		{name: "unknown", in: "proxy,speed", bad: true},
		{name: "empty", in: " , ", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOnly(tt.in)
			if tt.bad {
				if err == nil {
					t.Fatalf("parseOnly(%q) = %v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("parseOnly(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseCounts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []int
		bad  bool
	}{
		{name: "three", in: "1,4,8", want: []int{1, 4, 8}},
		{name: "spaces and repeats", in: " 2, 2 ,3", want: []int{2, 3}},
		{name: "zero", in: "0", bad: true},
		{name: "too many", in: "33", bad: true},
		{name: "word", in: "four", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCounts(tt.in)
			if tt.bad {
				if err == nil {
					t.Fatalf("parseCounts(%q) = %v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("parseCounts(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestSpread(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want spread
		text string
	}{
		{name: "empty", in: nil, want: spread{}, text: "n/a"},
		{name: "one", in: []float64{3}, want: spread{med: 3, min: 3, max: 3, n: 1}, text: "3.0"},
		{name: "odd", in: []float64{5, 1, 3}, want: spread{med: 3, min: 1, max: 5, n: 3}, text: "3.0 (1.0–5.0)"},
		{name: "even", in: []float64{4, 1, 2, 3}, want: spread{med: 2.5, min: 1, max: 4, n: 4}, text: "2.5 (1.0–4.0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := spreadOf(tt.in)
			if got != tt.want {
				t.Fatalf("spreadOf(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
			if s := got.format("%.1f"); s != tt.text {
				t.Fatalf("format = %q, want %q", s, tt.text)
			}
		})
	}
}

func TestStatusField(t *testing.T) {
	status := []byte("Name:\tswarmget\nVmHWM:\t   30720 kB\nRssAnon:\t    2048 kB\n")
	tests := []struct {
		name  string
		field string
		want  int64
		found bool
	}{
		{name: "VmHWM", field: "VmHWM:", want: 30720, found: true},
		{name: "RssAnon", field: "RssAnon:", want: 2048, found: true},
		{name: "missing", field: "VmSwap:", found: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := statusField(status, tt.field)
			if got != tt.want || ok != tt.found {
				t.Fatalf("statusField(%q) = %d, %v", tt.field, got, ok)
			}
		})
	}
}

func TestTimings(t *testing.T) {
	zero := time.Unix(100, 0)
	tests := []struct {
		name  string
		m     marks
		first time.Duration
		known bool
		total time.Duration
		bad   bool
	}{
		{name: "all marks", m: marks{zero: zero, first: zero.Add(time.Second), done: zero.Add(4 * time.Second)},
			first: time.Second, known: true, total: 4 * time.Second},
		{name: "first unseen", m: marks{zero: zero, done: zero.Add(2 * time.Second)}, total: 2 * time.Second},
		{name: "first before zero counts as zero", m: marks{zero: zero, first: zero.Add(-time.Millisecond), done: zero.Add(time.Second)},
			known: true, total: time.Second},
		{name: "done before zero", m: marks{zero: zero, done: zero.Add(-time.Second)}, bad: true},
		{name: "no zero", m: marks{done: zero}, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := timings(tt.m)
			if tt.bad {
				if err == nil {
					t.Fatalf("timings = %+v, want an error", s)
				}
				return
			}
			if err != nil || s.first != tt.first || s.firstKnown != tt.known || s.total != tt.total {
				t.Fatalf("timings = %+v, %v", s, err)
			}
		})
	}
}
