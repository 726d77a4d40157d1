package mse

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	testSKey  = bytes.Repeat([]byte{0xab}, 20)
	otherSKey = bytes.Repeat([]byte{0xcd}, 20)
)

// lookup is a Responder.SKey serving keys.
func lookup(keys ...[]byte) func([sha1.Size]byte) ([]byte, bool) {
	return func(h [sha1.Size]byte) ([]byte, bool) {
		for _, k := range keys {
			if Req2(k) == h {
				return k, true
			}
		}
		return nil, false
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-acc
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

type result struct {
	c    *Conn
	skey []byte
	err  error
}

// TestMSEInitiatorResponder runs our initiator against our responder over
// loopback TCP for each method, then moves data both ways at once.
func TestMSEInitiatorResponder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		provide Method
		sel     func(Method) Method
		ia      []byte
		want    Method
	}{
		{"rc4", RC4, nil, []byte("\x13BitTorrent protocol"), RC4},
		{"plaintext", Plaintext, nil, []byte("initial payload"), Plaintext},
		{"both, responder prefers rc4", Plaintext | RC4, PreferRC4, nil, RC4},
		{"both, responder picks plaintext", Plaintext | RC4, func(Method) Method { return Plaintext }, []byte("ia"), Plaintext},
		{"plaintext without ia", Plaintext, nil, nil, Plaintext},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tcpPair(t)
			deadline := time.Now().Add(5 * time.Second)
			resp := make(chan result, 1)
			go func() {
				c, k, err := Responder{SKey: lookup(otherSKey, testSKey), Select: tc.sel, Deadline: deadline}.Handshake(b, nil)
				resp <- result{c, k, err}
			}()
			ci, err := Initiator{SKey: testSKey, Provide: tc.provide, IA: tc.ia, Deadline: deadline}.Handshake(a, nil)
			if err != nil {
				t.Fatalf("initiator: %v", err)
			}
			r := <-resp
			if r.err != nil {
				t.Fatalf("responder: %v", r.err)
			}
			if !bytes.Equal(r.skey, testSKey) {
				t.Errorf("responder found skey %x", r.skey)
			}
			if ci.Method() != tc.want || r.c.Method() != tc.want {
				t.Errorf("methods %v and %v, want %v", ci.Method(), r.c.Method(), tc.want)
			}
			if len(tc.ia) > 0 {
				got := make([]byte, len(tc.ia))
				if _, err := io.ReadFull(r.c, got); err != nil || !bytes.Equal(got, tc.ia) {
					t.Fatalf("responder read IA %q, %v; want %q", got, err, tc.ia)
				}
			}
			exchange(t, ci, r.c, tc.want == Plaintext)
		})
	}
}

// exchange sends 1 MiB each way at once and checks it, and, for
// plaintext, that the bytes on the wire are the plain ones.
func exchange(t *testing.T, x, y *Conn, plain bool) {
	t.Helper()
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	orig := bytes.Clone(payload)
	errs := make(chan error, 2)
	for _, w := range []*Conn{x, y} {
		go func() {
			_, err := w.Write(payload)
			errs <- err
		}()
	}
	for _, r := range []*Conn{y, x} {
		got := make([]byte, len(payload))
		if _, err := io.ReadFull(bufio.NewReaderSize(r, 1000), got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, orig) {
			t.Fatal("data differs after the handshake")
		}
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(payload, orig) {
		t.Fatal("Write modified its argument")
	}
	// Plaintext really is plaintext: a write arrives unchanged on the
	// underlying connection.
	if plain {
		go x.Write([]byte("plain"))
		got := make([]byte, 5)
		if _, err := io.ReadFull(y.Conn, got); err != nil || string(got) != "plain" {
			t.Fatalf("raw read %q, %v", got, err)
		}
	}
}

// TestMSEResponderRefusesMethod: a responder that will only take RC4
// refuses an initiator offering only plaintext, and the initiator sees
// the connection end.
func TestMSEResponderRefusesMethod(t *testing.T) {
	a, b := tcpPair(t)
	resp := make(chan error, 1)
	go func() {
		_, _, err := Responder{SKey: lookup(testSKey), Select: func(m Method) Method { return m & RC4 }}.Handshake(b, nil)
		b.Close()
		resp <- err
	}()
	_, err := Initiator{SKey: testSKey, Provide: Plaintext, Deadline: time.Now().Add(5 * time.Second)}.Handshake(a, nil)
	if err == nil {
		t.Error("initiator succeeded")
	}
	if err := <-resp; !errors.Is(err, ErrNoMethod) {
		t.Errorf("responder: %v, want ErrNoMethod", err)
	}
}

// TestMSEInitiatorAgainstPlaintextPeer: a peer that answers our key with
// a BitTorrent handshake and garbage fails the VC search within its bound
// (or on EOF), never by hanging.
func TestMSEInitiatorAgainstPlaintextPeer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply []byte
		want  error
	}{
		{"garbage", bytes.Repeat([]byte{0x5a}, 2000), ErrNoSync},
		{"eof", nil, io.ErrUnexpectedEOF},
		{"short", bytes.Repeat([]byte{0x5a}, 200), io.ErrUnexpectedEOF},
		{"zero key", make([]byte, KeyLen), ErrBadKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tcpPair(t)
			go func() {
				io.ReadFull(b, make([]byte, KeyLen))
				b.Write(tc.reply)
				b.(*net.TCPConn).CloseWrite()
			}()
			_, err := Initiator{SKey: testSKey, Deadline: time.Now().Add(5 * time.Second)}.Handshake(a, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestMSEDeadline: a silent peer ends the handshake at the deadline.
func TestMSEDeadline(t *testing.T) {
	a, _ := tcpPair(t)
	start := time.Now()
	_, _, err := Responder{SKey: lookup(testSKey), Deadline: time.Now().Add(200 * time.Millisecond)}.Handshake(a, nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("took %v", el)
	}
}

// --- a scripted initiator, for hostile inputs to the responder ---

// fakeConn reads a fixed stream and discards writes.
type fakeConn struct {
	r io.Reader
	w bytes.Buffer
}

func (f *fakeConn) Read(p []byte) (int, error)       { return f.r.Read(p) }
func (f *fakeConn) Write(p []byte) (int, error)      { return f.w.Write(p) }
func (f *fakeConn) Close() error                     { return nil }
func (f *fakeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (f *fakeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (f *fakeConn) SetDeadline(time.Time) error      { return nil }
func (f *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (f *fakeConn) SetWriteDeadline(time.Time) error { return nil }
func seeded(seed uint64) io.Reader                   { return rand.NewChaCha8([32]byte{byte(seed)}) }
func respondTo(stream []byte) (*Conn, []byte, error) {
	return Responder{SKey: lookup(testSKey), Rand: seeded(2)}.Handshake(&fakeConn{r: bytes.NewReader(stream)}, nil)
}

// offer describes an initiator's first and third messages.
type offer struct {
	padA      int
	skey      []byte
	vc        [8]byte
	provide   Method
	padC      int
	padCLen   int // written as len(PadC); -1 means padC
	ia        []byte
	plainTail []byte // appended unencrypted after the encrypted part
}

// scripted builds the stream an initiator would send to a responder whose
// randomness is seeded(2), after the encrypted header the bytes of rest,
// encrypted too.
func scripted(t testing.TB, o offer, rest []byte) []byte {
	ikp, err := newKeypair(seeded(1))
	if err != nil {
		t.Fatal(err)
	}
	rkp, err := newKeypair(seeded(2))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ikp.secret(rkp.pub[:])
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte{}, ikp.pub[:]...)
	out = append(out, make([]byte, o.padA)...)
	req1, req2, req3 := hash("req1", s[:]), Req2(o.skey), hash("req3", s[:])
	out = append(out, req1[:]...)
	for i := range req2 {
		out = append(out, req2[i]^req3[i])
	}
	enc := cipher("keyA", s[:], o.skey)
	var body []byte
	body = append(body, o.vc[:]...)
	body = binary.BigEndian.AppendUint32(body, uint32(o.provide))
	n := o.padCLen
	if n < 0 {
		n = o.padC
	}
	body = binary.BigEndian.AppendUint16(body, uint16(n))
	body = append(body, make([]byte, o.padC)...)
	body = binary.BigEndian.AppendUint16(body, uint16(len(o.ia)))
	body = append(body, o.ia...)
	body = append(body, rest...)
	enc.XORKeyStream(body, body)
	return append(append(out, body...), o.plainTail...)
}

func goodOffer() offer {
	return offer{padA: 512, skey: testSKey, provide: RC4 | Plaintext, padCLen: -1, ia: []byte("hello")}
}

// TestMSEResponderHostile feeds the responder streams that are wrong in
// one way each.
func TestMSEResponderHostile(t *testing.T) {
	good := scripted(t, goodOffer(), nil)
	for _, tc := range []struct {
		name   string
		stream []byte
		want   error
	}{
		{"empty", nil, io.ErrUnexpectedEOF},
		{"short key", good[:50], io.ErrUnexpectedEOF},
		{"plaintext handshake", append([]byte("\x13BitTorrent protocol"), make([]byte, 100)...), io.ErrUnexpectedEOF},
		{"zero key", make([]byte, 700), ErrBadKey},
		{"key of ones", bytes.Repeat([]byte{0xff}, 700), ErrBadKey},
		{"garbage", bytes.Repeat([]byte{7}, 2000), ErrNoSync},
		{"padA 513", scripted(t, func() offer { o := goodOffer(); o.padA = 513; return o }(), nil), ErrNoSync},
		{"unknown skey", scripted(t, func() offer { o := goodOffer(); o.skey = otherSKey; return o }(), nil), ErrUnknownSKey},
		{"wrong vc", scripted(t, func() offer { o := goodOffer(); o.vc[3] = 1; return o }(), nil), ErrBadVC},
		{"padC 513", scripted(t, func() offer { o := goodOffer(); o.padC = 513; return o }(), nil), ErrPadTooLong},
		{"padC length lies", scripted(t, func() offer { o := goodOffer(); o.padCLen = 0xffff; return o }(), nil), ErrPadTooLong},
		{"no method", scripted(t, func() offer { o := goodOffer(); o.provide = 0; return o }(), nil), ErrNoMethod},
		{"unknown methods only", scripted(t, func() offer { o := goodOffer(); o.provide = 0xfffffffc; return o }(), nil), ErrNoMethod},
		{"truncated in the offer", good[:len(good)-12], io.ErrUnexpectedEOF},
		{"truncated after req1", good[:KeyLen+512+25], io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := respondTo(tc.stream)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// Every truncation of a good stream fails, none panics. (Truncation
	// within IA succeeds: IA belongs to the stream after the handshake.)
	for n := range len(good) - len("hello") {
		if _, _, err := respondTo(good[:n]); err == nil {
			t.Fatalf("a stream truncated to %d bytes was accepted", n)
		}
	}
}

// TestMSEResponderScripted checks the IA and the tail after it, for both
// methods, through a scripted initiator.
func TestMSEResponderScripted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		provide Method
		want    Method
	}{
		{"rc4", RC4, RC4},
		{"plaintext", Plaintext, Plaintext},
		{"both", RC4 | Plaintext, RC4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := goodOffer()
			o.provide, o.padA, o.padC = tc.provide, 0, 512
			var stream []byte
			if tc.want == RC4 {
				stream = scripted(t, o, []byte(" world"))
			} else {
				o.plainTail = []byte(" world")
				stream = scripted(t, o, nil)
			}
			c, skey, err := respondTo(stream)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(skey, testSKey) || c.Method() != tc.want {
				t.Fatalf("skey %x, method %v", skey, c.Method())
			}
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "hello world" {
				t.Fatalf("read %q, %v", got, err)
			}
		})
	}
}

// FuzzResponder feeds the responder arbitrary bytes as the initiator's
// stream. When the first byte is odd, the rest is the plaintext of the
// encrypted part (from VC on) behind a valid key exchange, so the fuzzer
// reaches the offer's parsing; otherwise it is the raw stream.
func FuzzResponder(f *testing.F) {
	f.Add([]byte{0})
	f.Add(append([]byte{0}, scripted(f, goodOffer(), nil)...))
	f.Add([]byte("\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x05hello"))
	f.Add([]byte("\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x02\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		stream := data[1:]
		if data[0]&1 == 1 {
			stream = scripted(t, offer{skey: testSKey}, nil)[:KeyLen+2*sha1.Size]
			ikp, _ := newKeypair(seeded(1))
			rkp, _ := newKeypair(seeded(2))
			s, _ := ikp.secret(rkp.pub[:])
			enc := cipher("keyA", s[:], testSKey)
			body := bytes.Clone(data[1:])
			enc.XORKeyStream(body, body)
			stream = append(stream, body...)
		}
		c, _, err := respondTo(stream)
		if err != nil {
			return
		}
		if m := c.Method(); m != RC4 && m != Plaintext {
			t.Fatalf("selected %v", m)
		}
		io.Copy(io.Discard, c)
	})
}

// BenchmarkMSEWrite measures RC4 write throughput to a discarding conn.
func BenchmarkMSEWrite(b *testing.B) {
	c := &Conn{Conn: &fakeConn{}, method: RC4, enc: cipher("keyA", []byte("s"), testSKey)}
	p := make([]byte, 128<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		c.Conn.(*fakeConn).w.Reset()
		c.Write(p)
	}
}
