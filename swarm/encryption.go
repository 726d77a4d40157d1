package swarm

import (
	"bufio"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm/internal/mse"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// Encryption is the policy for BitTorrent message stream encryption
// (MSE/PE) on peer connections. Its zero value is EncryptionPrefer.
type Encryption int

const (
	// EncryptionPrefer dials with MSE, offering RC4 and plaintext, and
	// dials again without it when the peer refuses; it accepts both
	// plaintext and MSE peers. Offered both, it selects plaintext after
	// the MSE handshake, as libtorrent does by default: the handshake
	// hides the protocol, and the stream costs no cipher.
	EncryptionPrefer Encryption = iota
	// EncryptionRequire dials and accepts only RC4-encrypted MSE
	// connections.
	EncryptionRequire
	// EncryptionDisable dials and accepts only plain BitTorrent
	// connections.
	EncryptionDisable
)

var encryptionNames = [...]string{EncryptionPrefer: "prefer", EncryptionRequire: "require", EncryptionDisable: "disable"}

func (e Encryption) String() string { return enumString("Encryption", encryptionNames[:], e) }

// MarshalText returns the policy's name.
func (e Encryption) MarshalText() ([]byte, error) {
	return enumMarshal("encryption policy", encryptionNames[:], e)
}

// UnmarshalText parses "prefer", "require" or "disable".
func (e *Encryption) UnmarshalText(b []byte) error {
	v, err := enumParse[Encryption]("encryption", encryptionNames[:], b)
	if err == nil {
		*e = v
	}
	return err
}

// mseRefusedError wraps an MSE handshake that failed other than by timing
// out: the peer closed, or answered something that is not MSE. Under
// EncryptionPrefer the peer is then dialled again in plaintext.
type mseRefusedError struct{ err error }

func (e *mseRefusedError) Error() string { return "swarm: encrypted handshake: " + e.err.Error() }
func (e *mseRefusedError) Unwrap() error { return e.err }

// ErrEncryptionPolicy reports an incoming connection that the client's
// Encryption policy does not allow.
var ErrEncryptionPolicy = errors.New("swarm: connection refused by the encryption policy")

// connectPeer dials addr and completes the handshakes for ih under the
// encryption policy. Each attempt has HandshakeTimeout; cancelling ctx
// closes the connection in progress.
func (c *Client) connectPeer(ctx context.Context, addr netip.AddrPort, ih metainfo.Hash) (net.Conn, *bufio.Reader, wire.Handshake, error) {
	switch c.cfg.Encryption {
	case EncryptionDisable:
		return c.connectOnce(ctx, addr, ih, 0)
	case EncryptionRequire:
		return c.connectOnce(ctx, addr, ih, mse.RC4)
	}
	conn, br, remote, err := c.connectOnce(ctx, addr, ih, mse.RC4|mse.Plaintext)
	var refused *mseRefusedError
	if errors.As(err, &refused) && ctx.Err() == nil {
		c.log.Debug("peer refused encryption; dialling again in plaintext", "addr", addr, "err", err)
		return c.connectOnce(ctx, addr, ih, 0)
	}
	return conn, br, remote, err
}

// connectOnce makes one connection: MSE first when provide is not zero,
// carrying our BitTorrent handshake as its initial payload.
func (c *Client) connectOnce(ctx context.Context, addr netip.AddrPort, ih metainfo.Hash, provide mse.Method) (_ net.Conn, _ *bufio.Reader, _ wire.Handshake, err error) {
	dctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	nc, err := c.cfg.Dial(dctx, "tcp", addr.String())
	if err != nil {
		return nil, nil, wire.Handshake{}, err
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer func() {
		if !stop() && err == nil {
			err = ErrClosed // ctx was cancelled and nc closed just now
		}
		if err != nil {
			nc.Close()
		}
	}()
	deadline, _ := dctx.Deadline()
	nc.SetDeadline(deadline)
	hs := wire.AppendHandshake(make([]byte, 0, wire.HandshakeLen), c.ourHandshake(ih))
	var conn net.Conn = nc
	if provide != 0 {
		mc, err := mse.Initiator{SKey: ih[:], Provide: provide, IA: hs}.Handshake(nc, nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, nil, wire.Handshake{}, fmt.Errorf("swarm: encrypted handshake: %w", err)
			}
			return nil, nil, wire.Handshake{}, &mseRefusedError{err}
		}
		conn = mc
	} else if _, err := nc.Write(hs); err != nil {
		return nil, nil, wire.Handshake{}, err
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	remote, err := wire.ReadHandshake(br)
	if err != nil {
		return nil, nil, wire.Handshake{}, err
	}
	if remote.InfoHash != ih {
		return nil, nil, wire.Handshake{}, fmt.Errorf("swarm: peer answered with info-hash %x", remote.InfoHash)
	}
	nc.SetDeadline(time.Time{})
	return conn, br, remote, nil
}

// acceptEncryption runs the responder's side of MSE on an incoming
// connection when it starts with something other than a BitTorrent
// handshake, as the policy allows. It returns the connection and reader
// the BitTorrent handshake continues on, and the info-hash the MSE
// handshake named (zero for plaintext).
func (c *Client) acceptEncryption(nc net.Conn) (net.Conn, *bufio.Reader, metainfo.Hash, error) {
	var none metainfo.Hash
	// A small buffer tells the two apart and carries the MSE handshake;
	// the connection's own 64 KiB buffer goes on top of whichever stream
	// follows (an empty small buffer passes large reads straight through).
	br := bufio.NewReaderSize(nc, 4096)
	head, err := br.Peek(1 + len(wire.Protocol))
	if err != nil {
		return nil, nil, none, fmt.Errorf("swarm: reading the first bytes: %w", err)
	}
	if head[0] == byte(len(wire.Protocol)) && string(head[1:]) == wire.Protocol {
		if c.cfg.Encryption == EncryptionRequire {
			return nil, nil, none, fmt.Errorf("%w: plaintext peer, encryption required", ErrEncryptionPolicy)
		}
		return nc, bufio.NewReaderSize(br, 64<<10), none, nil
	}
	if c.cfg.Encryption == EncryptionDisable {
		return nil, nil, none, fmt.Errorf("%w: encrypted peer, encryption disabled", ErrEncryptionPolicy)
	}
	sel := mse.PreferPlaintext
	if c.cfg.Encryption == EncryptionRequire {
		sel = func(m mse.Method) mse.Method { return m & mse.RC4 }
	}
	mc, skey, err := mse.Responder{SKey: c.streamKey, Select: sel}.Handshake(nc, br)
	if err != nil {
		return nil, nil, none, err
	}
	return mc, bufio.NewReaderSize(mc, 64<<10), metainfo.Hash(skey), nil
}

// streamKey finds the torrent whose MSE req2 hash is h.
func (c *Client) streamKey(h [sha1.Size]byte) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ih, ok := c.req2[h]
	if !ok {
		return nil, false
	}
	return ih[:], true
}

// encryptionOf names a connection's encryption for PeerStats.
func encryptionOf(conn net.Conn) string {
	if mc, ok := conn.(*mse.Conn); ok {
		return mc.Method().String()
	}
	return ""
}
