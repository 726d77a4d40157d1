package main

import (
	"context"
	"flag"
	"log/slog"
	"net/netip"
	"time"

	"github.com/tbproxy/tbproxy/dht"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// dhtOptions are the DHT flags shared by run and get.
type dhtOptions struct {
	enabled    bool
	listen     string
	bootstrap  listFlag
	allowLocal bool
}

func (o *dhtOptions) register(fs *flag.FlagSet, what string) {
	fs.BoolVar(&o.enabled, "dht", false, "find and announce peers in the Mainline DHT (BEP 5) "+what+"; never for private torrents")
	fs.StringVar(&o.listen, "dht-listen", ":6881", "DHT UDP `address`")
	fs.Var(&o.bootstrap, "dht-bootstrap", "DHT bootstrap node `host:port`; repeatable")
	fs.BoolVar(&o.allowLocal, "dht-allow-local", false, "accept loopback and private DHT nodes and peers (LAN DHTs, tests)")
}

// start starts the DHT node, or returns nil when it is off.
func (o *dhtOptions) start(log *slog.Logger) (*dht.Server, error) {
	if !o.enabled {
		return nil, nil
	}
	return dht.New(dht.Config{
		Addr:       o.listen,
		Bootstrap:  o.bootstrap,
		AllowLocal: o.allowLocal,
		Logger:     log,
	})
}

// dhtSource is a DHT node as a swarm.PeerSource.
type dhtSource struct{ node *dht.Server }

func (d dhtSource) Run(ctx context.Context, v swarm.SourceView, found func([]netip.AddrPort)) {
	d.node.FindPeers(ctx, v, found)
}

// dhtSources is the peer source list for torrent m: the DHT, unless it is
// off or m is private (BEP 27: a private torrent's peers come from its
// trackers only).
func dhtSources(node *dht.Server, m *metainfo.MetaInfo) []swarm.PeerSource {
	if node == nil || m.Info.Private {
		return nil
	}
	return []swarm.PeerSource{dhtSource{node}}
}

// dhtMagnetPeers looks up a magnet's peers in the DHT, without
// announcing (the torrent could turn out private), for up to wait.
func dhtMagnetPeers(ctx context.Context, node *dht.Server, ih metainfo.Hash, wait time.Duration) []netip.AddrPort {
	if node == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for ctx.Err() == nil {
		if node.Stats().Nodes == 0 {
			node.Bootstrap(ctx)
		}
		if peers, _ := node.Announce(ctx, ih, 0); len(peers) > 0 {
			return peers
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}
