package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/tbproxy/tbproxy/swarm"
)

// webSeedOptions are the flags that trade the origin's load against
// speed: how web seeds (the URL a file was asked by, and a torrent's
// url-list) are used while peers deliver, and how long a download may
// stall before they step in.
type webSeedOptions struct {
	mode  swarm.WebSeedMode
	stall time.Duration
}

func (o *webSeedOptions) register(fs *flag.FlagSet) {
	fs.TextVar(&o.mode, "web-seeds", swarm.WebSeedRescue,
		"`mode` in which the origin (and a torrent's url-list) serves a download while peers deliver: sparing (only when peers stall, "+
			"and for a new reader's first piece), always (alongside peers: faster, more load on the origin) or rescue-only "+
			"(sparing without the first piece: the least load on the origin)")
	durationVar(fs, &o.stall, "stall-budget", swarm.DefaultStallBudget,
		"the `duration` a download, or a client waiting for its next bytes, may go without bytes from peers before the origin steps in")
}

// options checks the flags and sets them on opts.
func (o *webSeedOptions) options(opts *swarm.TorrentOptions) error {
	if o.stall <= 0 {
		return fmt.Errorf("--stall-budget %v: must be positive", o.stall)
	}
	opts.WebSeedMode, opts.StallBudget = o.mode, o.stall
	return nil
}
