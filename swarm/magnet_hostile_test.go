package swarm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm/internal/extension"
	"github.com/tbproxy/tbproxy/swarm/internal/metadata"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// fakeMetaPeer is a scripted peer, on loopback, that offers a torrent's
// metadata over BEP 9: it announces size as its metadata_size and answers
// each request with serve(piece).
type fakeMetaPeer struct {
	ln       net.Listener
	wg       sync.WaitGroup
	quit     chan struct{}
	size     int64
	serve    func(piece int) metadata.Message // nil: never answer
	after    <-chan struct{}                  // when set, the extension handshake waits for it
	asked    chan struct{}                    // closed at the first request
	once     sync.Once
	requests atomic.Int32
}

// fakeMetaExtID is the id the fake peers give ut_metadata.
const fakeMetaExtID = 3

func startFakeMetaPeer(t *testing.T, size int64, serve func(int) metadata.Message, after <-chan struct{}) *fakeMetaPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fp := &fakeMetaPeer{ln: ln, quit: make(chan struct{}), size: size, serve: serve, after: after, asked: make(chan struct{})}
	fp.wg.Go(fp.accept)
	t.Cleanup(func() {
		close(fp.quit)
		ln.Close()
		fp.wg.Wait()
	})
	return fp
}

// servingInfo serves the pieces of info, as an honest peer would.
func servingInfo(info []byte) func(int) metadata.Message {
	return func(i int) metadata.Message { return metadata.Serve(info, i) }
}

func (fp *fakeMetaPeer) addr() netip.AddrPort { return netip.MustParseAddrPort(fp.ln.Addr().String()) }

func (fp *fakeMetaPeer) accept() { acceptAll(fp.ln, fp.talk) }

// talk plays one connection: the handshakes, then answers to every
// ut_metadata request until the connection ends.
func (fp *fakeMetaPeer) talk(c net.Conn) {
	br := bufio.NewReader(c)
	if answerHandshake(c, br, "-FAKEMD-", true) != nil {
		return
	}
	if fp.after != nil {
		select {
		case <-fp.after:
		case <-fp.quit:
			return
		}
	}
	enc := wire.NewEncoder(c)
	payload, _ := extension.MarshalHandshake(extension.Handshake{M: map[string]int{metadata.Name: fakeMetaExtID}, MetadataSize: fp.size})
	enc.Encode(&wire.Message{ID: wire.Extended, Payload: payload})
	if enc.Flush() != nil {
		return
	}
	dec := wire.NewDecoder(br, wire.Limits{})
	theirID := 0
	var m wire.Message
	for dec.Decode(&m) == nil {
		if m.ID != wire.Extended {
			continue
		}
		if m.ExtendedID == 0 {
			h, err := extension.ParseHandshake(m.Payload, extension.Limits{})
			if err != nil {
				return
			}
			theirID = h.M[metadata.Name]
			continue
		}
		msg, err := metadata.Parse(m.Payload)
		if err != nil || msg.Type != metadata.Request || theirID == 0 {
			continue
		}
		fp.requests.Add(1)
		fp.once.Do(func() { close(fp.asked) })
		if fp.serve == nil {
			fp.stall(enc)
			return
		}
		answer := metadata.Append(nil, fp.serve(msg.Piece))
		enc.Encode(&wire.Message{ID: wire.Extended, ExtendedID: uint8(theirID), Payload: answer})
		if enc.Flush() != nil {
			return
		}
	}
}

// stall sends keepalives, and never an answer, until the connection or
// the peer ends.
func (fp *fakeMetaPeer) stall(enc *wire.Encoder) {
	for {
		enc.Encode(&wire.Message{Keepalive: true})
		if enc.Flush() != nil {
			return
		}
		select {
		case <-fp.quit:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// magnetInfo returns a valid info dictionary of a single-file torrent with
// the given number of pieces: 20 bytes of it each, so 820 pieces make an
// info dictionary of two metadata pieces.
func magnetInfo(t *testing.T, pieces int) []byte {
	t.Helper()
	hashes := make([]byte, 20*pieces)
	rand.Read(hashes)
	info, err := bencode.Marshal(map[string]any{
		"length":       int64(pieces) * 16 << 10,
		"name":         "content.bin",
		"piece length": 16 << 10,
		"pieces":       hashes,
	})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// fetchWith resolves a magnet for info from the given peers.
func fetchWith(t *testing.T, info []byte, peers ...*fakeMetaPeer) (*metainfo.MetaInfo, error) {
	t.Helper()
	return fetchWithConfig(t, Config{Encryption: EncryptionDisable}, info, peers...)
}

// fetchWithConfig resolves a magnet for info from the given peers, with a
// client configured by cfg.
func fetchWithConfig(t *testing.T, cfg Config, info []byte, peers ...*fakeMetaPeer) (*metainfo.MetaInfo, error) {
	t.Helper()
	leech := newClient(t, cfg)
	var addrs []netip.AddrPort
	for _, p := range peers {
		addrs = append(addrs, p.addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return leech.FetchMetadata(ctx, metainfo.Magnet{InfoHash: sha1.Sum(info), Length: -1}, addrs...)
}

// checkResolved checks that a magnet resolved to exactly info.
func checkResolved(t *testing.T, info []byte, m *metainfo.MetaInfo, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if m.InfoHash != sha1.Sum(info) || !bytes.Equal(m.InfoBytes, info) {
		t.Fatal("resolved metadata differs from the torrent's")
	}
}

// TestMagnetLyingSizeFirst: a peer announcing a wrong metadata_size is
// asked first; its pieces fail the info-hash check and the honest peer's
// size is tried next, so the magnet resolves, to the true info.
func TestMagnetLyingSizeFirst(t *testing.T) {
	info := magnetInfo(t, 1200) // two metadata pieces
	garbage := make([]byte, 3*metadata.PieceSize)
	rand.Read(garbage)
	tests := []struct {
		name string
		lie  []byte // what the liar serves as the metadata
	}{
		{"bigger", append(bytes.Clone(info), garbage...)},
		{"smaller", info[:len(info)-100]},
		{"one piece", garbage[:100]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			liar := startFakeMetaPeer(t, int64(len(tt.lie)), servingInfo(tt.lie), nil)
			honest := startFakeMetaPeer(t, int64(len(info)), servingInfo(info), liar.asked)
			m, err := fetchWith(t, info, liar, honest)
			checkResolved(t, info, m, err)
			if liar.requests.Load() == 0 {
				t.Fatal("the liar was never asked")
			}
		})
	}
}

// TestMagnetCorruptPiecesFirst: a peer announcing the right size but
// serving a corrupted piece is asked first; the magnet still resolves from
// the honest peer.
func TestMagnetCorruptPiecesFirst(t *testing.T) {
	info := magnetInfo(t, 1200)
	corrupt := func(i int) metadata.Message {
		m := metadata.Serve(info, i)
		if i == 1 {
			m.Payload = bytes.Clone(m.Payload)
			m.Payload[0] ^= 0xff
		}
		return m
	}
	liar := startFakeMetaPeer(t, int64(len(info)), corrupt, nil)
	honest := startFakeMetaPeer(t, int64(len(info)), servingInfo(info), liar.asked)
	m, err := fetchWith(t, info, liar, honest)
	checkResolved(t, info, m, err)
}

// TestMagnetStallingLiarFirst: a peer announcing a wrong size is asked
// first and never answers, sending keepalives instead. Keepalives do not
// stretch the time it has to answer: it is dropped after RequestTimeout and
// the honest peer's size is assembled.
func TestMagnetStallingLiarFirst(t *testing.T) {
	info := magnetInfo(t, 1200)
	liar := startFakeMetaPeer(t, int64(len(info))+1, nil, nil)
	honest := startFakeMetaPeer(t, int64(len(info)), servingInfo(info), liar.asked)
	cfg := Config{Encryption: EncryptionDisable, RequestTimeout: 200 * time.Millisecond}
	m, err := fetchWithConfig(t, cfg, info, liar, honest)
	checkResolved(t, info, m, err)
}

// TestMagnetManyLyingSizes: more liars than metadata.MaxSizes, each with
// its own size, and no honest peer. The fetch gives up with a clear error
// once MaxSizes sizes have failed, having asked no more liars than that.
func TestMagnetManyLyingSizes(t *testing.T) {
	info := magnetInfo(t, 10)
	var liars []*fakeMetaPeer
	for i := range metadata.MaxSizes + 3 {
		lie := make([]byte, 1000+i)
		rand.Read(lie)
		liars = append(liars, startFakeMetaPeer(t, int64(len(lie)), servingInfo(lie), nil))
	}
	_, err := fetchWith(t, info, liars...)
	if !errors.Is(err, ErrNoMetadata) || !errors.Is(err, metadata.ErrGaveUp) {
		t.Fatalf("got %v, want ErrNoMetadata and metadata.ErrGaveUp", err)
	}
	asked := 0
	for _, l := range liars {
		if l.requests.Load() > 0 {
			asked++
		}
	}
	if asked > metadata.MaxSizes {
		t.Fatalf("%d liars were asked for pieces, more than the %d sizes allowed", asked, metadata.MaxSizes)
	}
}
