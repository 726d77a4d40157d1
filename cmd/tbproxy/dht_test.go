package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/dht"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// TestGetMagnetThroughDHT: `tbproxy get` of a bare magnet (no trackers,
// no x.pe) finds a seed through a DHT node given as --dht-bootstrap: the
// metadata (BEP 9) and then the file.
func TestGetMagnetThroughDHT(t *testing.T) {
	dir, content, m := writeShow(t, bytes.Repeat([]byte("dht-magnet-test!"), 80_000))
	node, err := dht.New(dht.Config{Addr: "127.0.0.1:0", AllowLocal: true, RetryInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	// The seed announces through a second node that joins through the first.
	seedNode, err := dht.New(dht.Config{Addr: "127.0.0.1:0", AllowLocal: true, Bootstrap: []string{node.Addr().String()}, RetryInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer seedNode.Close()
	seed, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	st := swarm.NewMemoryStorage(&m.Info)
	if err := st.Fill(bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if _, err := seed.AddTorrent(m, st, swarm.TorrentOptions{NoTrackers: true, PeerSources: dhtSources(seedNode, m)}); err != nil {
		t.Fatal(err)
	}
	magnet := fmt.Sprintf("magnet:?xt=urn:btih:%s&dn=show.mp3", m.InfoHash)
	out := filepath.Join(dir, "magnet.out")
	args := []string{"get", "-q", "--data-dir", filepath.Join(dir, "cache"), "--peer-listen", "127.0.0.1:0",
		"--dht-listen", "127.0.0.1:0", "--dht-allow-local", "--dht-bootstrap", node.Addr().String(), "-o", out, magnet}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, args, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("magnet download: %d bytes, %v", len(got), err)
	}
}

func TestDHTSourcesNeverPrivate(t *testing.T) {
	node, err := dht.New(dht.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	m := &metainfo.MetaInfo{}
	if len(dhtSources(node, m)) != 1 || len(dhtSources(nil, m)) != 0 {
		t.Fatal("public torrent: want the DHT only when it is on")
	}
	m.Info.Private = true
	if len(dhtSources(node, m)) != 0 {
		t.Fatal("a private torrent got the DHT")
	}
}

func TestDHTFlags(t *testing.T) {
	fs, o := runProxyFlags(io.Discard)
	if _, err := parseArgs(fs, nil); err != nil || o.dht.enabled {
		t.Fatalf("run: the DHT must be off by default (%v)", err)
	}
	fs, o = runProxyFlags(io.Discard)
	applyConfigText(t, fs, "dht = true\ndht-listen = \"127.0.0.1:7000\"\ndht-bootstrap = [\"router.example:6881\", \"192.0.2.1:6881\"]\n")
	if !o.dht.enabled || o.dht.listen != "127.0.0.1:7000" || len(o.dht.bootstrap) != 2 || o.dht.allowLocal {
		t.Fatalf("from the file: %+v", o.dht)
	}
}
