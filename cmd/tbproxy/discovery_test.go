package main

import (
	"io"
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
	applyConfigText(t, fs, "pex = true\nlsd = true\nlsd-interface = \"lo\"\n")
	o.discovery.apply(&cfg)
	if cfg.NoPEX || !cfg.LSD.Enabled || cfg.LSD.Interface != "lo" {
		t.Fatalf("from the config file: NoPEX %v, LSD %+v", cfg.NoPEX, cfg.LSD)
	}
}
