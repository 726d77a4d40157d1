// Package mse implements BitTorrent message stream encryption (MSE, also
// called PE or protocol encryption): the Diffie-Hellman handshake that
// precedes the BitTorrent handshake, for the initiator and the responder,
// and the connection that follows it, either RC4-encrypted or plaintext.
//
// MSE obfuscates traffic against passive inspection; it does not
// authenticate peers and does not resist an active attacker. The stream
// key (SKEY) is the torrent's info-hash, which both sides must know.
//
// The package does no logging and starts no goroutines. It reads the
// handshake through a buffered reader; every bound is explicit: pads of at
// most 512 bytes, synchronisation searches of at most 628 bytes (req1) and
// 616 bytes (VC) from the start of the stream, as the specification
// allows, and a caller-set deadline for the whole exchange.
package mse

import (
	"bufio"
	"crypto/rand"
	"crypto/rc4"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"time"
)

// Method is a set of crypto methods, as in crypto_provide and
// crypto_select.
type Method uint32

const (
	// Plaintext: only the handshake is encrypted; the stream after it is
	// not.
	Plaintext Method = 0x01
	// RC4: the whole stream is RC4-encrypted.
	RC4 Method = 0x02

	known = Plaintext | RC4
)

func (m Method) String() string {
	switch m {
	case Plaintext:
		return "plaintext"
	case RC4:
		return "rc4"
	case Plaintext | RC4:
		return "plaintext|rc4"
	}
	return fmt.Sprintf("method(%#x)", uint32(m))
}

// Wire sizes and bounds of the specification.
const (
	// KeyLen is the size of a DH public key on the wire: 768 bits.
	KeyLen = 96
	// MaxPad bounds PadA, PadB, PadC and PadD.
	MaxPad = 512
	// MaxIA bounds the initial payload, by the size of its length field.
	MaxIA = 0xffff
	// privLen is the size of our DH private keys: 160 bits.
	privLen = 20
	// discard is how much RC4 keystream is thrown away before use.
	discard = 1024
	// req1Search is how far into the stream the responder looks for
	// HASH('req1', S): Ya, PadA and the hash itself.
	req1Search = KeyLen + MaxPad + sha1.Size
	// vcSearch is how far into the stream the initiator looks for the
	// encrypted VC: Yb, PadB and VC.
	vcSearch = KeyLen + MaxPad + len(vc)
	// writeChunk bounds the buffer an encrypting Conn keeps for writes.
	writeChunk = 64 << 10
)

var vc [8]byte // the verification constant: eight zero bytes

// prime is the 768-bit safe prime P of the specification; the generator
// is 2.
var prime, _ = new(big.Int).SetString(
	"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"+
		"020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"+
		"4FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563", 16)

var (
	// ErrNoSync reports that HASH('req1', S) (for a responder) or the
	// encrypted VC (for an initiator) did not appear within the bound.
	// A plaintext-only peer that answers our public key with something
	// else, or a peer that is not speaking MSE at all, fails this way.
	ErrNoSync = errors.New("mse: no synchronisation within the allowed bytes")
	// ErrUnknownSKey reports a responder that serves no stream key (no
	// torrent) matching the initiator's req2 hash.
	ErrUnknownSKey = errors.New("mse: unknown stream key")
	// ErrBadVC reports a verification constant that is not zero.
	ErrBadVC = errors.New("mse: bad verification constant")
	// ErrPadTooLong reports a pad longer than MaxPad.
	ErrPadTooLong = errors.New("mse: pad longer than 512 bytes")
	// ErrNoMethod reports that no crypto method acceptable to both
	// sides was offered, or that the one selected was not offered.
	ErrNoMethod = errors.New("mse: no acceptable crypto method")
	// ErrBadKey reports a degenerate DH public key (0, 1, P-1 or ≥ P).
	ErrBadKey = errors.New("mse: invalid public key")
)

// Req2 is HASH('req2', skey), by which a responder recognises the stream
// key an initiator wants.
func Req2(skey []byte) [sha1.Size]byte { return hash("req2", skey) }

func hash(label string, parts ...[]byte) [sha1.Size]byte {
	h := sha1.New()
	io.WriteString(h, label)
	for _, p := range parts {
		h.Write(p)
	}
	var out [sha1.Size]byte
	h.Sum(out[:0])
	return out
}

// keypair is one side's DH key.
type keypair struct {
	priv *big.Int
	pub  [KeyLen]byte
}

func newKeypair(rnd io.Reader) (keypair, error) {
	var b [privLen]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return keypair{}, fmt.Errorf("mse: generating a key: %w", err)
	}
	k := keypair{priv: new(big.Int).SetBytes(b[:])}
	new(big.Int).Exp(big.NewInt(2), k.priv, prime).FillBytes(k.pub[:])
	return k, nil
}

// secret computes S from the peer's public key, rejecting the degenerate
// keys that would force a known S.
func (k keypair) secret(peer []byte) ([KeyLen]byte, error) {
	var s [KeyLen]byte
	y := new(big.Int).SetBytes(peer)
	pm1 := new(big.Int).Sub(prime, big.NewInt(1))
	if y.Cmp(big.NewInt(1)) <= 0 || y.Cmp(pm1) >= 0 {
		return s, ErrBadKey
	}
	new(big.Int).Exp(y, k.priv, prime).FillBytes(s[:])
	return s, nil
}

// cipher returns the RC4 stream keyed with HASH(label, S, SKEY), its
// first 1024 bytes discarded.
func cipher(label string, s []byte, skey []byte) *rc4.Cipher {
	key := hash(label, s, skey)
	c, _ := rc4.NewCipher(key[:]) // a 20-byte key is always valid
	var junk [discard]byte
	c.XORKeyStream(junk[:], junk[:])
	return c
}

// randomPad returns a random pad of 0 to max bytes.
func randomPad(rnd io.Reader, max int) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(rnd, n[:]); err != nil {
		return nil, err
	}
	pad := make([]byte, int(binary.BigEndian.Uint16(n[:]))%(max+1))
	if _, err := io.ReadFull(rnd, pad); err != nil {
		return nil, err
	}
	return pad, nil
}

// bufReader returns r as a buffered reader over conn.
func bufReader(conn net.Conn, r io.Reader) *bufio.Reader {
	if br, ok := r.(*bufio.Reader); ok {
		return br
	}
	if r == nil {
		r = conn
	}
	return bufio.NewReaderSize(r, 4096)
}

// syncTo reads from br until the last len(pattern) bytes read equal
// pattern, reading at most limit bytes. It returns how many bytes came
// before the pattern.
func syncTo(br *bufio.Reader, pattern []byte, limit int) (int, error) {
	win := make([]byte, 0, limit)
	for len(win) < limit {
		b, err := br.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("mse: looking for synchronisation: %w", noEOF(err))
		}
		win = append(win, b)
		if n := len(win) - len(pattern); n >= 0 && string(win[n:]) == string(pattern) {
			return n, nil
		}
	}
	return 0, ErrNoSync
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF: a handshake cut short is
// truncated, not finished.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func readFull(br *bufio.Reader, p []byte, what string) error {
	if _, err := io.ReadFull(br, p); err != nil {
		return fmt.Errorf("mse: reading %s: %w", what, noEOF(err))
	}
	return nil
}

// setDeadline applies d for the handshake and returns the function that
// lifts it; a zero d leaves the caller's deadlines alone.
func setDeadline(conn net.Conn, d time.Time) func() {
	if d.IsZero() {
		return func() {}
	}
	conn.SetDeadline(d)
	return func() { conn.SetDeadline(time.Time{}) }
}

// Initiator is the configuration of the side that opens the connection.
type Initiator struct {
	// SKey is the stream key: the info-hash of the torrent wanted.
	SKey []byte
	// Provide is the set of methods offered; zero means RC4 only.
	Provide Method
	// IA is the initial payload sent within the handshake, usually the
	// BitTorrent handshake; at most MaxIA bytes.
	IA []byte
	// Deadline, when not zero, bounds the handshake; it is lifted when
	// the handshake succeeds.
	Deadline time.Time
	// Rand is the source of keys and pads; nil means crypto/rand.
	Rand io.Reader
}

// Handshake runs the initiator's side on conn. r, when not nil, is where
// conn's bytes are read from (a bufio.Reader over conn, say). On success
// the returned Conn carries the stream that follows, IA already sent.
func (in Initiator) Handshake(conn net.Conn, r io.Reader) (*Conn, error) {
	provide := in.Provide
	if provide == 0 {
		provide = RC4
	}
	if provide&^known != 0 {
		return nil, fmt.Errorf("mse: cannot provide %v", provide)
	}
	if len(in.IA) > MaxIA {
		return nil, fmt.Errorf("mse: initial payload of %d bytes", len(in.IA))
	}
	rnd := in.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	lift := setDeadline(conn, in.Deadline)
	br := bufReader(conn, r)

	// 1 A->B: Ya, PadA.
	kp, err := newKeypair(rnd)
	if err != nil {
		return nil, err
	}
	padA, err := randomPad(rnd, MaxPad)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(append(kp.pub[:], padA...)); err != nil {
		return nil, fmt.Errorf("mse: sending our key: %w", err)
	}

	// 2 B->A: Yb (PadB is skipped while looking for VC).
	var yb [KeyLen]byte
	if err := readFull(br, yb[:], "the peer's key"); err != nil {
		return nil, err
	}
	s, err := kp.secret(yb[:])
	if err != nil {
		return nil, err
	}

	// 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
	// ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA).
	enc := cipher("keyA", s[:], in.SKey)
	dec := cipher("keyB", s[:], in.SKey)
	req1 := hash("req1", s[:])
	req2, req3 := Req2(in.SKey), hash("req3", s[:])
	msg := make([]byte, 0, 2*sha1.Size+len(vc)+4+2+2+len(in.IA))
	msg = append(msg, req1[:]...)
	for i := range req2 {
		msg = append(msg, req2[i]^req3[i])
	}
	plain := len(msg)
	msg = append(msg, vc[:]...)
	msg = binary.BigEndian.AppendUint32(msg, uint32(provide))
	msg = binary.BigEndian.AppendUint16(msg, 0) // PadC is empty
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(in.IA)))
	msg = append(msg, in.IA...)
	enc.XORKeyStream(msg[plain:], msg[plain:])
	if _, err := conn.Write(msg); err != nil {
		return nil, fmt.Errorf("mse: sending the crypto offer: %w", err)
	}

	// 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD). VC is found
	// by its encryption, which comes after PadB.
	var want [len(vc)]byte
	dec.XORKeyStream(want[:], vc[:])
	if _, err := syncTo(br, want[:], vcSearch-KeyLen); err != nil {
		return nil, err
	}
	var sel [6]byte
	if err := readFull(br, sel[:], "the crypto selection"); err != nil {
		return nil, err
	}
	dec.XORKeyStream(sel[:], sel[:])
	method := Method(binary.BigEndian.Uint32(sel[:4]))
	if (method != Plaintext && method != RC4) || method&provide == 0 {
		return nil, fmt.Errorf("%w: peer selected %v, we offered %v", ErrNoMethod, method, provide)
	}
	if err := skipPad(br, dec, int(binary.BigEndian.Uint16(sel[4:])), "PadD"); err != nil {
		return nil, err
	}
	lift()
	c := &Conn{Conn: conn, r: br, method: method}
	if method == RC4 {
		c.enc, c.dec, c.decLeft = enc, dec, -1
	}
	return c, nil
}

// skipPad reads and decrypts a pad of n bytes, after checking n.
func skipPad(br *bufio.Reader, dec *rc4.Cipher, n int, what string) error {
	if n > MaxPad {
		return fmt.Errorf("%w: %s of %d", ErrPadTooLong, what, n)
	}
	var pad [MaxPad]byte
	if err := readFull(br, pad[:n], what); err != nil {
		return err
	}
	dec.XORKeyStream(pad[:n], pad[:n])
	return nil
}

// Responder is the configuration of the side that accepts connections.
type Responder struct {
	// SKey returns the stream key (an info-hash) whose Req2 is req2, and
	// whether there is one.
	SKey func(req2 [sha1.Size]byte) ([]byte, bool)
	// Select picks one method out of those the initiator provides, or
	// returns 0 to refuse them all. Nil means RC4 when provided, else
	// plaintext.
	Select func(provided Method) Method
	// Deadline, when not zero, bounds the handshake; it is lifted when
	// the handshake succeeds.
	Deadline time.Time
	// Rand is the source of keys and pads; nil means crypto/rand.
	Rand io.Reader
}

// PreferRC4 selects RC4 when it is provided, and plaintext otherwise.
func PreferRC4(provided Method) Method {
	if provided&RC4 != 0 {
		return RC4
	}
	return provided & Plaintext
}

// PreferPlaintext selects plaintext when it is provided, and RC4
// otherwise: the handshake still hides the BitTorrent header, and the
// stream costs no cipher (libtorrent's default, prefer_rc4 off).
func PreferPlaintext(provided Method) Method {
	if provided&Plaintext != 0 {
		return Plaintext
	}
	return provided & RC4
}

// Handshake runs the responder's side on conn, whose first bytes (the
// initiator's public key) have not been consumed; r, when not nil, is
// where conn's bytes are read from. It returns the Conn, whose stream
// begins with the initiator's IA, and the stream key found.
func (rs Responder) Handshake(conn net.Conn, r io.Reader) (*Conn, []byte, error) {
	rnd := rs.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	choose := rs.Select
	if choose == nil {
		choose = PreferRC4
	}
	lift := setDeadline(conn, rs.Deadline)
	br := bufReader(conn, r)

	// 1 A->B: Ya (PadA is skipped while looking for req1).
	var ya [KeyLen]byte
	if err := readFull(br, ya[:], "the peer's key"); err != nil {
		return nil, nil, err
	}
	kp, err := newKeypair(rnd)
	if err != nil {
		return nil, nil, err
	}
	s, err := kp.secret(ya[:])
	if err != nil {
		return nil, nil, err
	}

	// 2 B->A: Yb, PadB.
	padB, err := randomPad(rnd, MaxPad)
	if err != nil {
		return nil, nil, err
	}
	if _, err := conn.Write(append(kp.pub[:], padB...)); err != nil {
		return nil, nil, fmt.Errorf("mse: sending our key: %w", err)
	}

	// 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
	// ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA).
	req1 := hash("req1", s[:])
	if _, err := syncTo(br, req1[:], req1Search-KeyLen); err != nil {
		return nil, nil, err
	}
	var req [sha1.Size]byte
	if err := readFull(br, req[:], "the stream key hash"); err != nil {
		return nil, nil, err
	}
	req3 := hash("req3", s[:])
	for i := range req {
		req[i] ^= req3[i]
	}
	var skey []byte
	ok := false
	if rs.SKey != nil {
		skey, ok = rs.SKey(req)
	}
	if !ok {
		return nil, nil, ErrUnknownSKey
	}
	dec := cipher("keyA", s[:], skey)
	enc := cipher("keyB", s[:], skey)
	var head [len(vc) + 4 + 2]byte
	if err := readFull(br, head[:], "the crypto offer"); err != nil {
		return nil, nil, err
	}
	dec.XORKeyStream(head[:], head[:])
	if [len(vc)]byte(head[:len(vc)]) != vc {
		return nil, nil, ErrBadVC
	}
	provided := Method(binary.BigEndian.Uint32(head[len(vc):]))
	if err := skipPad(br, dec, int(binary.BigEndian.Uint16(head[len(vc)+4:])), "PadC"); err != nil {
		return nil, nil, err
	}
	var lenIA [2]byte
	if err := readFull(br, lenIA[:], "the initial payload's length"); err != nil {
		return nil, nil, err
	}
	dec.XORKeyStream(lenIA[:], lenIA[:])
	method := choose(provided & known)
	if (method != Plaintext && method != RC4) || method&provided == 0 {
		return nil, nil, fmt.Errorf("%w: peer provided %v", ErrNoMethod, provided)
	}

	// 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD); PadD is empty.
	var reply [len(vc) + 4 + 2]byte
	binary.BigEndian.PutUint32(reply[len(vc):], uint32(method))
	enc.XORKeyStream(reply[:], reply[:])
	if _, err := conn.Write(reply[:]); err != nil {
		return nil, nil, fmt.Errorf("mse: sending the crypto selection: %w", err)
	}
	lift()
	c := &Conn{Conn: conn, r: br, method: method, dec: dec}
	switch {
	case method == RC4:
		c.enc, c.decLeft = enc, -1
	case binary.BigEndian.Uint16(lenIA[:]) > 0:
		// IA is encrypted even when the stream after it is not.
		c.decLeft = int(binary.BigEndian.Uint16(lenIA[:]))
	default:
		c.dec = nil
	}
	return c, skey, nil
}

// Conn is a connection after an MSE handshake: it decrypts what it reads
// and encrypts what it writes when RC4 was selected, and passes bytes
// through otherwise. Reads and writes may run concurrently with each
// other; the other methods are those of the underlying net.Conn.
type Conn struct {
	net.Conn
	method Method // selected; fixed

	rmu     sync.Mutex
	r       io.Reader   // the handshake's buffered reader over Conn; guarded by rmu
	dec     *rc4.Cipher // nil once nothing more is encrypted; guarded by rmu
	decLeft int         // bytes still encrypted, or -1 for all; guarded by rmu

	wmu  sync.Mutex
	enc  *rc4.Cipher // nil for plaintext; guarded by wmu
	wbuf []byte      // ciphertext staging, at most writeChunk; guarded by wmu
}

// Method returns the crypto method selected in the handshake.
func (c *Conn) Method() Method { return c.method }

// Read reads and, where the stream is encrypted, decrypts in place.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := c.r.Read(p)
	if c.dec != nil && n > 0 {
		m := n
		if c.decLeft >= 0 {
			m = min(m, c.decLeft)
			c.decLeft -= m
		}
		c.dec.XORKeyStream(p[:m], p[:m])
		if c.decLeft == 0 {
			c.dec = nil
		}
	}
	return n, err
}

// Write encrypts p, when the stream is encrypted, into a reused buffer
// and writes it; p itself is never modified. A failed write leaves the
// stream out of step, so the connection must then be closed.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.enc == nil {
		return c.Conn.Write(p)
	}
	if need := min(len(p), writeChunk); len(c.wbuf) < need {
		c.wbuf = make([]byte, need)
	}
	written := 0
	for len(p) > 0 {
		b := c.wbuf[:min(len(p), len(c.wbuf))]
		c.enc.XORKeyStream(b, p[:len(b)])
		n, err := c.Conn.Write(b)
		written += n
		if err != nil {
			return written, err
		}
		p = p[len(b):]
	}
	return written, nil
}
