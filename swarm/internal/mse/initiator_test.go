package mse

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// --- a scripted responder, for hostile inputs to the initiator ---

// maxReply is the most an initiator may read from a responder before the
// handshake ends: Yb, PadB and VC (the VC search), crypto_select,
// len(PadD) and PadD.
const maxReply = KeyLen + MaxPad + len(vc) + 4 + 2 + MaxPad

// pairKeys is the key exchange between an initiator whose randomness is
// seeded(1) and a responder whose randomness is seeded(2).
type pairKeys struct {
	s    [KeyLen]byte // the shared secret
	yb   [KeyLen]byte // the responder's public key
	padA int          // the length of the initiator's PadA
}

var testPairKeys = sync.OnceValues(func() (pairKeys, error) {
	var k pairKeys
	ir := seeded(1)
	ikp, err := newKeypair(ir)
	if err != nil {
		return k, err
	}
	padA, err := randomPad(ir, MaxPad)
	if err != nil {
		return k, err
	}
	rkp, err := newKeypair(seeded(2))
	if err != nil {
		return k, err
	}
	if k.s, err = rkp.secret(ikp.pub[:]); err != nil {
		return k, err
	}
	k.yb, k.padA = rkp.pub, len(padA)
	return k, nil
})

func keys(t testing.TB) pairKeys {
	t.Helper()
	k, err := testPairKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// reply describes a responder's second and fourth messages.
type reply struct {
	yb      []byte // nil means the responder's real key
	padB    int
	vc      [8]byte
	sel     Method
	padD    int
	padDLen int    // written as len(PadD); -1 means padD
	tail    []byte // after PadD; encrypted when sel is RC4
	// body, when not nil, is the plaintext from VC on, in place of vc,
	// sel, padD, padDLen and tail.
	body []byte
}

func goodReply() reply {
	return reply{padB: 512, sel: RC4, padD: 512, padDLen: -1}
}

// scriptedReply builds the stream a responder whose randomness is
// seeded(2) would send to an initiator whose randomness is seeded(1).
func scriptedReply(t testing.TB, r reply) []byte {
	k := keys(t)
	out := append([]byte{}, k.yb[:]...)
	if r.yb != nil {
		out = append(out[:0], r.yb...)
	}
	for i := range r.padB {
		out = append(out, byte(i*31+7))
	}
	body := r.body
	if body == nil {
		body = append(body, r.vc[:]...)
		body = binary.BigEndian.AppendUint32(body, uint32(r.sel))
		n := r.padDLen
		if n < 0 {
			n = r.padD
		}
		body = binary.BigEndian.AppendUint16(body, uint16(n))
		body = append(body, make([]byte, r.padD)...)
		if r.sel == RC4 {
			body = append(body, r.tail...)
		}
	} else {
		body = bytes.Clone(body)
	}
	cipher("keyB", k.s[:], testSKey).XORKeyStream(body, body)
	out = append(out, body...)
	if r.body == nil && r.sel != RC4 {
		out = append(out, r.tail...)
	}
	return out
}

// responderReply is what our Responder, with randomness seeded(2),
// answers to an initiator with randomness seeded(1) providing provide.
func responderReply(t testing.TB, provide Method, sel func(Method) Method) []byte {
	t.Helper()
	fc := &fakeConn{r: bytes.NewReader(scripted(t, offer{skey: testSKey, provide: provide, padCLen: -1}, nil))}
	if _, _, err := (Responder{SKey: lookup(testSKey), Select: sel, Rand: seeded(2)}).Handshake(fc, nil); err != nil {
		t.Fatal(err)
	}
	return fc.w.Bytes()
}

// scriptConn is an initiator's end of a connection to a scripted
// responder. It hands out the script one byte per Read, so that nothing
// is read ahead into a buffer: the bytes served are exactly the bytes
// the handshake consumed. It keeps what is written and records the
// deadline, which can never be reached since a Read never blocks.
type scriptConn struct {
	fakeConn
	served      int
	reads       int
	deadline    time.Time
	firstReadDL time.Time // the deadline when Read was first called
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.reads == 0 {
		c.firstReadDL = c.deadline
	}
	c.reads++
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.r.Read(p[:1])
	c.served += n
	return n, err
}

func (c *scriptConn) SetDeadline(d time.Time) error { c.deadline = d; return nil }

// initiate runs an initiator with randomness seeded(1) against stream.
func initiate(provide Method, stream []byte) (*Conn, *scriptConn, error) {
	sc := &scriptConn{fakeConn: fakeConn{r: bytes.NewReader(stream)}}
	in := Initiator{SKey: testSKey, Provide: provide, IA: []byte("hello"), Deadline: time.Now().Add(time.Hour), Rand: seeded(1)}
	c, err := in.Handshake(sc, nil)
	return c, sc, err
}

// key96 is n as a public key on the wire.
func key96(n *big.Int) []byte { return n.FillBytes(make([]byte, KeyLen)) }

// TestMSEInitiatorScripted runs the initiator against scripted replies
// that are valid, pads of the maximum length included, and against our
// Responder's own reply.
func TestMSEInitiatorScripted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		provide Method
		r       reply
		stream  []byte // when not nil, in place of r
		want    Method
		tail    string
	}{
		{"rc4, pads of 512", RC4, reply{padB: 512, sel: RC4, padD: 512, padDLen: -1, tail: []byte("tail")}, nil, RC4, "tail"},
		{"plaintext, pads of 512", Plaintext, reply{padB: 512, sel: Plaintext, padD: 512, padDLen: -1, tail: []byte("tail")}, nil, Plaintext, "tail"},
		{"both offered, plaintext selected, no pads", RC4 | Plaintext, reply{sel: Plaintext, padDLen: -1, tail: []byte("tail")}, nil, Plaintext, "tail"},
		{"our responder's reply", RC4, reply{}, responderReply(t, RC4, nil), RC4, ""},
		{"our responder's plaintext reply", RC4 | Plaintext, reply{}, responderReply(t, RC4|Plaintext, PreferPlaintext), Plaintext, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := tc.stream
			if stream == nil {
				stream = scriptedReply(t, tc.r)
			}
			c, sc, err := initiate(tc.provide, stream)
			if err != nil {
				t.Fatal(err)
			}
			if c.Method() != tc.want {
				t.Errorf("method %v, want %v", c.Method(), tc.want)
			}
			if want := len(stream) - len(tc.tail); sc.served != want {
				t.Errorf("consumed %d bytes of the reply, want %d", sc.served, want)
			}
			if sc.firstReadDL.IsZero() {
				t.Error("the deadline was not set before the first read")
			}
			if !sc.deadline.IsZero() {
				t.Error("the deadline was not lifted after the handshake")
			}
			// The initiator sent Ya, PadA, req1, req2^req3 and the offer.
			if want := KeyLen + keys(t).padA + 20 + 20 + 8 + 4 + 2 + 2 + len("hello"); sc.w.Len() != want {
				t.Errorf("initiator wrote %d bytes, want %d", sc.w.Len(), want)
			}
			got, err := io.ReadAll(c)
			if err != nil || string(got) != tc.tail {
				t.Errorf("read %q, %v after the handshake; want %q", got, err, tc.tail)
			}
		})
	}
}

// TestMSEInitiatorHostile feeds the initiator replies that are wrong in
// one way each, and checks the error and how much of the reply it read.
func TestMSEInitiatorHostile(t *testing.T) {
	with := func(f func(*reply)) []byte {
		r := goodReply()
		f(&r)
		return scriptedReply(t, r)
	}
	one := big.NewInt(1)
	pm1 := new(big.Int).Sub(prime, one)
	afterSel := KeyLen + 512 + len(vc) + 6 // Yb, PadB of 512, VC, crypto_select, len(PadD)
	good := scriptedReply(t, goodReply())
	for _, tc := range []struct {
		name    string
		provide Method
		stream  []byte
		want    error
		msg     string // in the error's text, when not empty
		served  int    // bytes of the reply consumed; -1 for any
	}{
		// (a) A method that was not offered.
		{"selects rc4, plaintext offered", Plaintext, good, ErrNoMethod, "peer selected rc4, we offered plaintext", afterSel},
		{"selects plaintext, rc4 offered", RC4, with(func(r *reply) { r.sel = Plaintext }), ErrNoMethod, "peer selected plaintext, we offered rc4", afterSel},
		{"selects plaintext, default offer", 0, with(func(r *reply) { r.sel = Plaintext }), ErrNoMethod, "we offered rc4", afterSel},
		{"selects both", RC4 | Plaintext, with(func(r *reply) { r.sel = RC4 | Plaintext }), ErrNoMethod, "peer selected plaintext|rc4", afterSel},
		{"selects nothing", RC4 | Plaintext, with(func(r *reply) { r.sel = 0 }), ErrNoMethod, "peer selected method(0x0)", afterSel},
		{"selects an unknown method", RC4 | Plaintext, with(func(r *reply) { r.sel = 0x04 }), ErrNoMethod, "peer selected method(0x4)", afterSel},
		{"selects rc4 and unknown bits", RC4 | Plaintext, with(func(r *reply) { r.sel = RC4 | 0x100 }), ErrNoMethod, "", afterSel},
		// (b) PadD too long: refused from its length, before reading it.
		{"padD 513", RC4, with(func(r *reply) { r.padD = 513 }), ErrPadTooLong, "PadD of 513", afterSel},
		{"padD length 0xffff", RC4, with(func(r *reply) { r.padD, r.padDLen = 0, 0xffff }), ErrPadTooLong, "PadD of 65535", afterSel},
		// (c) No VC within 512+8 bytes after Yb.
		{"padB 513", RC4, with(func(r *reply) { r.padB = 513 }), ErrNoSync, "", KeyLen + MaxPad + len(vc)},
		{"garbage after the key", RC4, append(scriptedReply(t, reply{body: []byte{}}), bytes.Repeat([]byte{0x5a}, 4000)...), ErrNoSync, "", KeyLen + MaxPad + len(vc)},
		{"wrong vc", RC4, with(func(r *reply) { r.vc[7] = 1 }), ErrNoSync, "", KeyLen + MaxPad + len(vc)},
		{"unencrypted vc", RC4, slices.Concat(scriptedReply(t, reply{body: []byte{}}), make([]byte, 100), []byte{0, 0, 0, 2, 0, 0}, bytes.Repeat([]byte{0x5a}, 600)), ErrNoSync, "", KeyLen + MaxPad + len(vc)},
		// (d) Degenerate keys, refused before anything else is read.
		{"key 0", RC4, with(func(r *reply) { r.yb = make([]byte, KeyLen) }), ErrBadKey, "", KeyLen},
		{"key 1", RC4, with(func(r *reply) { r.yb = key96(one) }), ErrBadKey, "", KeyLen},
		{"key p-1", RC4, with(func(r *reply) { r.yb = key96(pm1) }), ErrBadKey, "", KeyLen},
		{"key p", RC4, with(func(r *reply) { r.yb = key96(prime) }), ErrBadKey, "", KeyLen},
		{"key of ones", RC4, with(func(r *reply) { r.yb = bytes.Repeat([]byte{0xff}, KeyLen) }), ErrBadKey, "", KeyLen},
		// Truncations.
		{"empty", RC4, nil, io.ErrUnexpectedEOF, "", 0},
		{"short key", RC4, good[:50], io.ErrUnexpectedEOF, "", 50},
		{"truncated in padD", RC4, good[:len(good)-1], io.ErrUnexpectedEOF, "", len(good) - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, sc, err := initiate(tc.provide, tc.stream)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %q, want it to say %q", err, tc.msg)
			}
			if tc.served >= 0 && sc.served != tc.served {
				t.Errorf("consumed %d bytes of the reply, want %d", sc.served, tc.served)
			}
			if sc.served > maxReply {
				t.Errorf("consumed %d bytes of the reply, more than %d", sc.served, maxReply)
			}
			// With a degenerate key S is known to an eavesdropper: nothing
			// encrypted with it may be sent, only Ya and PadA.
			if errors.Is(err, ErrBadKey) && sc.w.Len() != KeyLen+keys(t).padA {
				t.Errorf("initiator wrote %d bytes after a degenerate key, want %d", sc.w.Len(), KeyLen+keys(t).padA)
			}
		})
	}
	// Every truncation of a good reply fails, having read all of it.
	for n := range len(good) {
		if _, sc, err := initiate(RC4, good[:n]); !errors.Is(err, io.ErrUnexpectedEOF) || sc.served != n {
			t.Fatalf("reply truncated to %d bytes: err = %v, consumed %d", n, err, sc.served)
		}
	}
}

// initiateOverPipe runs an initiator with randomness seeded(1) over
// net.Pipe against a responder that drains whatever the initiator writes,
// sends stream one byte per write and then closes its end. It returns the
// handshake's error and how many bytes of stream the initiator took. All
// goroutines have ended when it returns.
func initiateOverPipe(t *testing.T, stream []byte) (int, error) {
	t.Helper()
	a, b := net.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(io.Discard, b) })
	served := make(chan int, 1)
	wg.Go(func() {
		n := 0
		for ; n < len(stream); n++ {
			// A write on net.Pipe returns once the reader has taken it.
			if _, err := b.Write(stream[n : n+1]); err != nil {
				break
			}
		}
		served <- n
		b.Close()
	})
	// The deadline only turns a hang into a failure.
	in := Initiator{SKey: testSKey, Deadline: time.Now().Add(time.Minute), Rand: seeded(1)}
	_, err := in.Handshake(a, nil)
	a.Close()
	wg.Wait()
	return <-served, err
}

// TestMSEInitiatorPeerCloses: a responder that closes the connection at
// any point of the handshake ends it with an error, not a hang, and one
// that keeps sending without a VC is cut off at the bound.
func TestMSEInitiatorPeerCloses(t *testing.T) {
	r := goodReply()
	r.padB, r.padD = 200, 100
	good := scriptedReply(t, r)
	vcAt := KeyLen + r.padB
	for _, n := range []int{0, 1, KeyLen - 1, KeyLen, KeyLen + 100, vcAt + 4, vcAt + len(vc), vcAt + len(vc) + 3, vcAt + len(vc) + 6, len(good) - 1} {
		served, err := initiateOverPipe(t, good[:n])
		// The initiator's reads find EOF, or its write of the offer finds
		// the pipe closed.
		if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("closed after %d bytes: err = %v, want an unexpected EOF or a closed pipe", n, err)
		}
		if served != n {
			t.Errorf("closed after %d bytes: the initiator took %d", n, served)
		}
	}
	if served, err := initiateOverPipe(t, good); err != nil || served != len(good) {
		t.Errorf("full reply: err = %v, took %d of %d bytes", err, served, len(good))
	}
	garbage := append(scriptedReply(t, reply{body: []byte{}}), bytes.Repeat([]byte{0x5a}, 4000)...)
	if served, err := initiateOverPipe(t, garbage); !errors.Is(err, ErrNoSync) || served != KeyLen+MaxPad+len(vc) {
		t.Errorf("no VC: err = %v, took %d bytes; want ErrNoSync after %d", err, served, KeyLen+MaxPad+len(vc))
	}
}

// FuzzInitiator feeds the initiator arbitrary bytes as the responder's
// reply. Bits 1-2 of the first byte are the methods offered. When the
// first byte is odd, the next two are the length of PadB (modulo 1024),
// and the rest is the plaintext of the encrypted part (from VC on), behind
// the responder's real key and that PadB, so the fuzzer reaches the
// parsing of the selection; otherwise the rest is the raw reply.
func FuzzInitiator(f *testing.F) {
	f.Add(append([]byte{byte(RC4) << 1}, responderReply(f, RC4, nil)...))
	f.Add(append([]byte{byte(RC4|Plaintext)<<1 | 1, 0, 16}, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 't'))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		provide := Method(data[0]>>1) & known
		offered := provide
		if offered == 0 {
			offered = RC4
		}
		stream := data[1:]
		if data[0]&1 == 1 {
			if len(data) < 3 {
				return
			}
			padB := int(binary.BigEndian.Uint16(data[1:3]) % 1024)
			stream = scriptedReply(t, reply{padB: padB, body: data[3:]})
		}
		c, sc, err := initiate(provide, stream)
		if sc.served > maxReply {
			t.Fatalf("consumed %d bytes of the reply, more than %d (err %v)", sc.served, maxReply, err)
		}
		if err != nil {
			return
		}
		if m := c.Method(); (m != RC4 && m != Plaintext) || m&offered == 0 {
			t.Fatalf("negotiated %v, offered %v", m, offered)
		}
		if sc.served < KeyLen+len(vc)+6 {
			t.Fatalf("succeeded after %d bytes", sc.served)
		}
		if !sc.deadline.IsZero() {
			t.Fatal("the deadline was not lifted after the handshake")
		}
		io.Copy(io.Discard, c)
	})
}
