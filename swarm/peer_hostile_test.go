package swarm

// Hostile and idle peers against a real Client: what one connection may
// make the engine hold or wait for.

import (
	"bufio"
	"context"
	"crypto/sha1"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm/internal/extension"
	"github.com/tbproxy/tbproxy/swarm/internal/peerconn"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// TestFetchMetadataReturnsOnceResolved: once one peer has given the whole,
// verified metadata, FetchMetadata returns at once. A second honest peer
// that joined too late to be asked anything sits idle with no read
// deadline; FetchMetadata ends its connection rather than wait for it.
func TestFetchMetadataReturnsOnceResolved(t *testing.T) {
	info := magnetInfo(t, 10) // one metadata piece
	first := startFakeMetaPeer(t, int64(len(info)), servingInfo(info), nil)
	late := startFakeMetaPeer(t, int64(len(info)), servingInfo(info), first.asked)
	leech := newClient(t, Config{Encryption: EncryptionDisable})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	m, err := leech.FetchMetadata(ctx, metainfo.Magnet{InfoHash: sha1.Sum(info), Length: -1}, first.addr(), late.addr())
	elapsed := time.Since(start)
	checkResolved(t, info, m, err)
	if elapsed > 30*time.Second {
		t.Fatalf("FetchMetadata returned %v after it was called; the metadata was complete long before (it waited for an idle peer)", elapsed.Round(time.Millisecond))
	}
}

// TestExtensionNamesBounded: a peer that keeps sending extension
// handshakes (BEP 10 allows later ones) with fresh names makes the engine
// keep no more names than one handshake may carry
// (extension.DefaultMaxNames).
func TestExtensionNamesBounded(t *testing.T) {
	f := newFixture(t, 256<<10, 32<<10)
	c := newClient(t, Config{})
	tor := f.seedOn(t, c, TorrentOptions{})
	nc, err := net.Dial("tcp", c.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hs := wire.Handshake{InfoHash: f.meta.InfoHash}
	hs.SetExtended(true)
	copy(hs.PeerID[:], "-REVIEW-extnames0000")
	if err := wire.WriteHandshake(nc, hs); err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := wire.ReadHandshake(bufio.NewReader(nc)); err != nil {
		t.Fatal(err)
	}
	const rounds = 40
	var buf []byte
	for r := range rounds {
		m := map[string]int{}
		for i := range extension.DefaultMaxNames {
			m[fmt.Sprintf("x_%04d_%03d_%040d", r, i, 0)] = 1 + i%200
		}
		payload, err := extension.MarshalHandshake(extension.Handshake{M: m})
		if err != nil {
			t.Fatal(err)
		}
		buf = wire.AppendMessage(buf, &wire.Message{ID: wire.Extended, Payload: payload})
	}
	// An interested message last: once it is handled, every handshake is.
	buf = wire.AppendMessage(buf, &wire.Message{ID: wire.Interested})
	if _, err := nc.Write(buf); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		names, interested := 0, false
		if !tor.do(func() {
			for _, p := range tor.s.peers {
				names = max(names, len(p.ext.Handshake().M))
				interested = interested || p.peerInterested
			}
		}) {
			t.Fatal("torrent closed")
		}
		if interested {
			if names > extension.DefaultMaxNames {
				t.Fatalf("the client keeps %d extension names for one peer (%d handshakes of %d names), more than the %d one handshake may carry: the table grows with every handshake", names, rounds, extension.DefaultMaxNames, extension.DefaultMaxNames)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the peer's messages were never handled")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCancelFloodDropsPeerThatDoesNotRead: a fast-extension peer that
// stops reading, so that our writer blocks (for up to the write timeout),
// and sends pairs of request and cancel for one block. Each request is
// valid and each cancel takes it back, so neither the upload cap nor the
// invalid-request limit is reached; each cancel leaves a reject in the
// request's place (BEP 6). Once more than peerconn.MaxQueue messages
// wait for it, the peer is dropped: it does not read what we send.
func TestCancelFloodDropsPeerThatDoesNotRead(t *testing.T) {
	f := newFixture(t, 1<<20, 64<<10)
	c := newClient(t, Config{})
	tor := f.seedOn(t, c, TorrentOptions{})
	rp := dialRaw(t, c, f, true)
	rp.nc.(*net.TCPConn).SetReadBuffer(16 << 10)
	rp.unchoked()
	// Fill the connection: 1000 blocks, 16 MiB, that we do not read.
	var fill []wire.Message
	for k := range 1000 {
		fill = append(fill, request(uint32(k%16), uint32(k/16%4)*blockSize, blockSize))
	}
	rp.send(fill...)
	rp.sync(tor)
	req := request(3, 0, blockSize)
	cancel := req
	cancel.ID = wire.Cancel
	var buf []byte
	for range peerconn.MaxQueue + 1000 {
		buf = wire.AppendMessage(buf, &req)
		buf = wire.AppendMessage(buf, &cancel)
	}
	rp.nc.Write(buf) // fails once the client has dropped us
	// Nothing is read meanwhile: the writer stays blocked.
	waitFor(t, rawDeadline, "the peer dropped", func() bool {
		peers := -1
		tor.do(func() { peers = len(tor.s.peers) })
		return peers == 0
	})
}
