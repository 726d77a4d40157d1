package main

import (
	"testing"

	"github.com/tbproxy/tbproxy/swarm"
)

func TestParseFlagsWebSeedMode(t *testing.T) {
	base := []string{"--torrent", "x.torrent", "--dir", "/tmp", "--peer", "127.0.0.1:6881"}
	tests := []struct {
		name string
		args []string
		want swarm.WebSeedMode
		bad  bool
	}{
		{name: "default is sparing", args: base, want: swarm.WebSeedRescue},
		{name: "sparing", args: append(base, "--web-seed-mode", "sparing"), want: swarm.WebSeedRescue},
		{name: "always", args: append(base, "--web-seed-mode", "always"), want: swarm.WebSeedAlways},
		{name: "rescue-only", args: append(base, "--web-seed-mode", "rescue-only"), want: swarm.WebSeedRescueOnly},
		{name: "unknown", args: append(base, "--web-seed-mode", "often"), bad: true},
		{name: "web only needs no peer", args: []string{"--torrent", "x.torrent", "--dir", "/tmp", "--web-only"}, want: swarm.WebSeedRescue},
		{name: "no peer", args: []string{"--torrent", "x.torrent", "--dir", "/tmp"}, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args)
			if tt.bad {
				if err == nil {
					t.Fatalf("parseFlags(%q) succeeded, want an error", tt.args)
				}
				return
			}
			if err != nil || o.webMode != tt.want {
				t.Fatalf("parseFlags(%q) = mode %v, %v; want %v", tt.args, o.webMode, err, tt.want)
			}
		})
	}
}
