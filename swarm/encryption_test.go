package swarm

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm/internal/mse"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// TestEncryptionPolicies has a leech dial a seed under each pair of
// policies: it either downloads over the connection type expected or
// never connects.
func TestEncryptionPolicies(t *testing.T) {
	f := newFixture(t, 1<<20+77, 64<<10)
	for _, tc := range []struct {
		name        string
		leech, seed Encryption
		want        string // PeerStats.Encryption; "refused" for no connection
	}{
		{"prefer to prefer", EncryptionPrefer, EncryptionPrefer, "plaintext"}, // MSE handshake, plain stream
		{"require to prefer", EncryptionRequire, EncryptionPrefer, "rc4"},
		{"prefer to require", EncryptionPrefer, EncryptionRequire, "rc4"},
		{"require to require", EncryptionRequire, EncryptionRequire, "rc4"},
		{"prefer to disable falls back", EncryptionPrefer, EncryptionDisable, ""},
		{"disable to prefer", EncryptionDisable, EncryptionPrefer, ""},
		{"disable to disable", EncryptionDisable, EncryptionDisable, ""},
		{"disable to require", EncryptionDisable, EncryptionRequire, "refused"},
		{"require to disable", EncryptionRequire, EncryptionDisable, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seed := newClient(t, Config{Encryption: tc.seed})
			stor := f.seedOn(t, seed, TorrentOptions{})
			// A lazy leech stays connected without downloading, so both
			// sides' view of the connection can be checked first.
			leech := newClient(t, Config{Encryption: tc.leech})
			tor, err := leech.AddTorrent(f.meta, NewMemoryStorage(&f.meta.Info), TorrentOptions{NoTrackers: true, Lazy: true})
			if err != nil {
				t.Fatal(err)
			}
			tor.AddPeers(addrOf(seed))
			if tc.want == "refused" {
				time.Sleep(1500 * time.Millisecond)
				if s := tor.Stats(); len(s.Peers) != 0 {
					t.Fatalf("leech connected anyway: %+v", s.Peers)
				}
				if s := stor.Stats(); len(s.Peers) != 0 || s.Uploaded != 0 {
					t.Fatalf("seed connected anyway: %+v", s.Peers)
				}
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for _, tr := range []*Torrent{tor, stor} {
				for len(tr.Stats().Peers) == 0 && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if s := tr.Stats(); len(s.Peers) != 1 || s.Peers[0].Encryption != tc.want {
					t.Fatalf("peers %+v, want one with encryption %q", s.Peers, tc.want)
				}
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			streamEquals(t, ctx, tor, f.content)
		})
	}
}

// TestEncryptionIncomingHostile opens raw connections to a client and
// sends what a hostile or confused initiator would; each must be closed
// by the client, none accepted.
func TestEncryptionIncomingHostile(t *testing.T) {
	f := newFixture(t, 256<<10, 64<<10)
	// A short handshake timeout ends the silent ones quickly.
	c := newClient(t, Config{HandshakeTimeout: 300 * time.Millisecond})
	tor := f.seedOn(t, c, TorrentOptions{})
	other := metainfo.Hash{1, 2, 3}
	for _, tc := range []struct {
		name string
		run  func(nc net.Conn) error
	}{
		{"garbage", func(nc net.Conn) error {
			_, err := nc.Write(bytes.Repeat([]byte{0x42}, 4000))
			return err
		}},
		{"truncated key", func(nc net.Conn) error {
			_, err := nc.Write(bytes.Repeat([]byte{0x42}, 50))
			return err
		}},
		{"unknown torrent", func(nc net.Conn) error {
			_, err := mse.Initiator{SKey: other[:], Provide: mse.RC4}.Handshake(nc, nil)
			return err
		}},
		{"skey and handshake disagree", func(nc net.Conn) error {
			hs := wire.AppendHandshake(nil, wire.Handshake{InfoHash: other})
			mc, err := mse.Initiator{SKey: f.meta.InfoHash[:], Provide: mse.RC4, IA: hs}.Handshake(nc, nil)
			if err != nil {
				return err
			}
			_, err = mc.Read(make([]byte, 1))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", c.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(5 * time.Second))
			tc.run(nc)
			// The client ends the connection: EOF or reset, never a
			// timeout on our side.
			_, err = io.Copy(io.Discard, nc)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the client kept a hostile connection open")
			}
			if s := tor.Stats(); len(s.Peers) != 0 {
				t.Fatalf("a hostile connection became a peer: %+v", s.Peers)
			}
		})
	}
}
