package main

import (
	"flag"

	"github.com/tbproxy/tbproxy/swarm"
)

// discovery holds the peer-discovery flags shared by run, get and publish:
// peer exchange (BEP 11) and local service discovery (BEP 14). Both leak
// what a user fetches to peers and to the local network, so the proxy and
// get leave them off unless asked (HARDENING.md, security defaults 5).
type discovery struct {
	pex          bool
	lsd          bool
	lsdInterface string
}

func (d *discovery) register(fs *flag.FlagSet, pexDefault bool) {
	fs.BoolVar(&d.pex, "pex", pexDefault, "exchange peers with peers (BEP 11 ut_pex); never for private torrents")
	fs.BoolVar(&d.lsd, "lsd", false, "find peers on the local network by multicast (BEP 14); never for private torrents")
	fs.StringVar(&d.lsdInterface, "lsd-interface", "", "network `interface` for --lsd (default: the system's choice)")
}

// apply sets the engine's configuration from the flags.
func (d *discovery) apply(cfg *swarm.Config) {
	cfg.NoPEX = !d.pex
	cfg.LSD = swarm.LSDConfig{Enabled: d.lsd, Interface: d.lsdInterface}
}
