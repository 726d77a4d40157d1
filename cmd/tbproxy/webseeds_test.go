package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/swarm"
)

// TestWebSeedFlags: --web-seeds and --stall-budget reach the proxy's
// configuration, from flags and from the config file, and bad values are
// refused with the flag's name.
func TestWebSeedFlags(t *testing.T) {
	fs, o := runProxyFlags(io.Discard)
	cfg, err := o.proxyConfig()
	if err != nil || cfg.WebSeedMode != swarm.WebSeedRescue || cfg.StallBudget != swarm.DefaultStallBudget {
		t.Fatalf("defaults: %v %v, %v", cfg.WebSeedMode, cfg.StallBudget, err)
	}
	applyConfigText(t, fs, "web-seeds = \"rescue-only\"\nstall-budget = \"500ms\"\n")
	if cfg, err = o.proxyConfig(); err != nil || cfg.WebSeedMode != swarm.WebSeedRescueOnly || cfg.StallBudget != 500*time.Millisecond {
		t.Fatalf("from the file: %v %v, %v", cfg.WebSeedMode, cfg.StallBudget, err)
	}
	if _, err := parseArgs(fs, []string{"--web-seeds", "always"}); err != nil {
		t.Fatal(err)
	}
	if cfg, err = o.proxyConfig(); err != nil || cfg.WebSeedMode != swarm.WebSeedAlways {
		t.Fatalf("from a flag: %v, %v", cfg.WebSeedMode, err)
	}
	if _, err := parseArgs(fs, []string{"--web-seeds", "never"}); err == nil || !strings.Contains(err.Error(), "sparing, always or rescue-only") {
		t.Fatalf("--web-seeds never: %v", err)
	}
	if _, err := parseArgs(fs, []string{"--stall-budget", "-1s"}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.proxyConfig(); err == nil || !strings.Contains(err.Error(), "--stall-budget") {
		t.Fatalf("a negative stall budget: %v", err)
	}
	var stderr strings.Builder
	if err := runGet(t.Context(), []string{"--stall-budget", "0s", "http://127.0.0.1:1/x"}, io.Discard, &stderr); err == nil || !strings.Contains(err.Error(), "--stall-budget") {
		t.Fatalf("tbproxy get --stall-budget 0s: %v", err)
	}
}
