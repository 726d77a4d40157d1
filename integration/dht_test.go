//go:build linux

package integration

// Interop tests for package dht: a small Mainline DHT of python3-libtorrent
// nodes on 127.0.0.1 (testdata/ltdht.py), our node joining it, and a
// 64 MiB torrent without trackers found through it in both directions.

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/dht"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// dhtSource makes our DHT node a swarm.PeerSource (cmd/tbproxy has the
// same adapter).
type dhtSource struct{ node *dht.Server }

func (d dhtSource) Run(ctx context.Context, v swarm.SourceView, found func([]netip.AddrPort)) {
	d.node.FindPeers(ctx, v, found)
}

// ltDHTNodes is how many libtorrent DHT nodes ltdht.py runs.
const ltDHTNodes = 4

// startLTDHT runs ltdht.py with count libtorrent DHT nodes, which know
// each other, and returns their "127.0.0.1:PORT" addresses.
func startLTDHT(t *testing.T, count int) []string {
	t.Helper()
	requireTool(t, "libtorrent")
	script, err := filepath.Abs(filepath.Join("testdata", "ltdht.py"))
	if err != nil {
		t.Fatal(err)
	}
	ports := make(chan []int, 1)
	var once sync.Once
	onLine := func(line string) {
		var ev struct {
			Event string `json:"event"`
			Ports []int  `json:"ports"`
		}
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Event == "listening" {
			once.Do(func() { ports <- ev.Ports })
		}
	}
	p := startProcWith(t, procConfig{onLine: onLine}, systemPython, script, "--count", itoa(count))
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case ps := <-ports:
		var addrs []string
		for _, port := range ps {
			addrs = append(addrs, hostPort(port))
		}
		return addrs
	case <-p.Done():
		t.Fatalf("ltdht.py exited (%s) before listening:\n%s", p.state(), p.Tail(50))
	case <-timer.C:
		t.Fatalf("ltdht.py did not listen within %v:\n%s", startTimeout, p.Tail(50))
	}
	return nil
}

func itoa(n int) string { return strconv.Itoa(n) }

// newDHTNode starts our DHT node on 127.0.0.1, joining through bootstrap,
// with a debug log printed if the test fails. Cleanup closes it.
func newDHTNode(t *testing.T, bootstrap []string) *dht.Server {
	t.Helper()
	logs := &lineRing{}
	w := &lineWriter{emit: logs.add}
	node, err := dht.New(dht.Config{
		Addr:          loopback + ":0",
		Bootstrap:     bootstrap,
		AllowLocal:    true, // every node here is on 127.0.0.1
		QueryTimeout:  time.Second,
		RetryInterval: 2 * time.Second,
		Logger:        slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("starting our DHT node: %v", err)
	}
	t.Cleanup(func() {
		node.Close()
		w.flush()
		if t.Failed() || os.Getenv(swarmLogEnv) != "" {
			t.Logf("our DHT node %v: %+v; log (tail):\n%s", node.Addr(), node.Stats(), logs.tail(100))
		}
	})
	return node
}

// waitDHTPeer looks ih up through node (without announcing) until the
// DHT gives peer.
func waitDHTPeer(t *testing.T, node *dht.Server, ih metainfo.Hash, peer netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		peers, _ := node.Announce(ctx, ih, 0)
		cancel()
		if slices.Contains(peers, peer) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the DHT did not give %v for %v within %v (it gave %v)", peer, ih, startTimeout, peers)
		}
		time.Sleep(pollInterval)
	}
}

// TestDHTFindsLibtorrentSeed: a libtorrent seed announces a torrent
// without trackers to a libtorrent DHT; our engine, given only our DHT
// node as a peer source, finds the seed and downloads the file.
func TestDHTFindsLibtorrentSeed(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "libtorrent")
	fx := newSwarmFixture(t, 301)
	nodes := startLTDHT(t, ltDHTNodes)
	seed := startLibtorrent(t, LTOpts{Torrent: fx.torrent, SaveDir: fx.dir, Seed: true, SeedMode: true, DHT: true, DHTNodes: nodes})
	node := newDHTNode(t, nodes)
	// The engine starts once the seed's announce is in the DHT: started
	// sooner, its own announce could be found by the seed first, and the
	// seed would dial in instead of being found.
	waitDHTPeer(t, node, fx.meta.InfoHash, netip.MustParseAddrPort(seed.Addr()))

	st := newSwarmFileStorage(t, &fx.meta.Info)
	c, _ := newSwarmClient(t)
	tor := addSwarmTorrent(t, c, fx.meta, st, swarm.TorrentOptions{
		NoTrackers:  true,
		PeerSources: []swarm.PeerSource{dhtSource{node}},
	})
	d := waitSwarmComplete(t, tor, swarmTransfer)
	checkSwarmDownload(t, fx, tor, st)
	sameFile(t, fx.content, st.path)
	if _, ok := d.peers[netip.MustParseAddrPort(seed.Addr())]; !ok {
		t.Errorf("the libtorrent seed %v never showed as a peer; peers seen: %v", seed.Addr(), d.peers)
	}
	d.logRate(t, "libtorrent seed found through the DHT")
	if s := node.Stats(); s.Nodes == 0 {
		t.Errorf("our DHT node's routing table is empty: %+v", s)
	}
}

// TestDHTLibtorrentFindsUs: our engine seeds a torrent without trackers
// and announces it through our DHT node; a libtorrent leech that knows
// only the DHT finds us there and downloads the file.
func TestDHTLibtorrentFindsUs(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "libtorrent")
	fx := newSwarmFixture(t, 302)
	nodes := startLTDHT(t, ltDHTNodes)
	node := newDHTNode(t, nodes)
	tor, addr := startSwarmSeed(t, fx, nil, swarm.TorrentOptions{
		NoTrackers:  true,
		PeerSources: []swarm.PeerSource{dhtSource{node}},
	})
	leechDir := t.TempDir()
	leech := startLibtorrent(t, LTOpts{Torrent: fx.torrent, SaveDir: leechDir, DHT: true, DHTNodes: nodes})
	waitLeech(t, tor, "libtorrent leech "+leech.Addr()+" (finding "+addr.String()+" through the DHT)", leech.WaitFinished)
	checkSwarmSeeded(t, fx, tor, filepath.Join(leechDir, swarmFileName))
}
