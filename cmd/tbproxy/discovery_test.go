package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/tbproxy/tbproxy/swarm"
)

func TestDiscoverySettings(t *testing.T) {
	fs, o := runProxyFlags(io.Discard)
	var cfg swarm.Config
	o.discovery.apply(&cfg)
	if !cfg.NoPEX || cfg.LSD.Enabled {
		t.Fatalf("the proxy's defaults: NoPEX %v, LSD %+v; want both off", cfg.NoPEX, cfg.LSD)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("pex = true\nlsd = true\nlsd-interface = \"lo\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, path, true); err != nil {
		t.Fatal(err)
	}
	o.discovery.apply(&cfg)
	if cfg.NoPEX || !cfg.LSD.Enabled || cfg.LSD.Interface != "lo" {
		t.Fatalf("from the config file: NoPEX %v, LSD %+v", cfg.NoPEX, cfg.LSD)
	}
}
