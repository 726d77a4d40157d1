package pex

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Message
		err  error
	}{
		{"empty dict", "de", Message{}, nil},
		{"libtorrent style, every key, empty", "d5:added0:7:added.f0:6:added60:8:added6.f0:7:dropped0:8:dropped60:e", Message{}, nil},
		{"one ipv4 with flags",
			"d5:added6:\x7f\x00\x00\x01\x1a\xe17:added.f1:\x12e",
			Message{Added: []Peer{{ap("127.0.0.1:6881"), FlagSeed | FlagReachable}}}, nil},
		{"ipv4 without flags", "d5:added6:\x0a\x00\x00\x01\x00\x50e",
			Message{Added: []Peer{{Addr: ap("10.0.0.1:80")}}}, nil},
		{"ipv6 added and dropped",
			"d6:added618:\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1a\xe18:added6.f1:\x017:dropped6:\x01\x02\x03\x04\x00\x01e",
			Message{Added: []Peer{{ap("[2001:db8::1]:6881"), FlagEncryption}}, Dropped: []netip.AddrPort{ap("1.2.3.4:1")}}, nil},
		{"ipv4-mapped ipv6 comes out as ipv4",
			"d6:added618:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x01\x02\x03\x04\x00\x01e",
			Message{Added: []Peer{{Addr: ap("1.2.3.4:1")}}}, nil},
		{"port zero and unspecified skipped",
			"d5:added12:\x01\x02\x03\x04\x00\x00\x00\x00\x00\x00\x00\x017:added.f2:\x02\x02e", Message{}, nil},
		{"unknown keys ignored", "d5:added6:\x01\x02\x03\x04\x00\x017:added.f1:\x001:xi5ee",
			Message{Added: []Peer{{Addr: ap("1.2.3.4:1")}}}, nil},
		{"ragged ipv4 list", "d5:added5:\x01\x02\x03\x04\x00e", Message{}, ErrBad},
		{"ragged ipv6 list", "d8:dropped66:\x01\x02\x03\x04\x00\x01e", Message{}, ErrBad},
		{"flags do not match", "d5:added6:\x01\x02\x03\x04\x00\x017:added.f2:\x00\x00e", Message{}, ErrBad},
		{"not a dict", "le", Message{}, ErrBad},
		{"wrong type", "d5:addedi5ee", Message{}, ErrBad},
		{"unsorted keys", "d7:dropped0:5:added0:e", Message{}, ErrBad},
		{"trailing bytes", "dexx", Message{}, ErrBad},
		{"truncated", "d5:added6:\x01\x02", Message{}, ErrBad},
		{"huge length prefix", "d5:added99999999:e", Message{}, ErrBad},
		{"deep nesting", "d1:x" + strings.Repeat("l", 50) + strings.Repeat("e", 50) + "e", Message{}, ErrBad},
		{"too large", "d1:x20000:" + strings.Repeat("a", 20000) + "e", Message{}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in), Limits{})
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !errors.Is(err, ErrBad) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Added) == 0 {
				got.Added = nil
			}
			if len(got.Dropped) == 0 {
				got.Dropped = nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseTruncatesLongLists(t *testing.T) {
	var m Message
	for i := range 300 {
		m.Added = append(m.Added, Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 1)})
	}
	b := Append(nil, m)
	got, err := Parse(b, Limits{MaxPeers: 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Added) != 20 || !got.Truncated || got.Added[19] != m.Added[19] {
		t.Fatalf("kept %d (truncated %v)", len(got.Added), got.Truncated)
	}
	if _, err := Parse(b, Limits{MaxSize: len(b) - 1}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a message over MaxSize: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	m := Message{
		Added:   []Peer{{ap("1.2.3.4:5"), FlagSeed}, {ap("[2001:db8::7]:9"), FlagReachable}, {ap("9.8.7.6:5"), 0}},
		Dropped: []netip.AddrPort{ap("4.3.2.1:1"), ap("[2001:db8::8]:2")},
	}
	got, err := Parse(Append(nil, m), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := Message{
		Added:   []Peer{m.Added[0], m.Added[2], m.Added[1]}, // IPv4 first
		Dropped: m.Dropped,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if b := Append(nil, Message{}); string(b) != "de" {
		t.Fatalf("empty message encodes as %q", b)
	}
}

func TestSender(t *testing.T) {
	var s Sender
	t0 := time.Unix(1000, 0)
	if _, ok := s.Next(t0, nil); ok {
		t.Fatal("a message with nothing to say")
	}
	a, b, c := Peer{Addr: ap("1.1.1.1:1")}, Peer{Addr: ap("2.2.2.2:2"), Flags: FlagSeed}, Peer{Addr: ap("3.3.3.3:3")}
	m, ok := s.Next(t0, []Peer{a, b, a})
	if !ok || !reflect.DeepEqual(m.Added, []Peer{a, b}) || len(m.Dropped) != 0 {
		t.Fatalf("first message %+v, %v", m, ok)
	}
	if _, ok := s.Next(t0.Add(59*time.Second), []Peer{a, c}); ok {
		t.Fatal("a second message within a minute")
	}
	m, ok = s.Next(t0.Add(time.Minute), []Peer{a, c})
	if !ok || !reflect.DeepEqual(m.Added, []Peer{c}) || !reflect.DeepEqual(m.Dropped, []netip.AddrPort{b.Addr}) {
		t.Fatalf("diff %+v, %v", m, ok)
	}
	if _, ok := s.Next(t0.Add(3*time.Minute), []Peer{a, c}); ok {
		t.Fatal("a message with no change")
	}
	if s.Told() != 2 {
		t.Fatalf("told %d", s.Told())
	}
}

func TestSenderCapsAtFifty(t *testing.T) {
	var s Sender
	var many []Peer
	for i := range 120 {
		many = append(many, Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 1)})
	}
	now := time.Unix(0, 0)
	total := 0
	for i := 0; i < 3; i++ {
		m, ok := s.Next(now, many)
		if !ok || len(m.Added) > MaxSend {
			t.Fatalf("message %d: %d added, %v", i, len(m.Added), ok)
		}
		total += len(m.Added)
		now = now.Add(Interval)
	}
	if total != 120 {
		t.Fatalf("told %d of 120 in three messages", total)
	}
	m, ok := s.Next(now, nil)
	if !ok || len(m.Dropped) != MaxSend || len(m.Added) != 0 {
		t.Fatalf("dropping everyone: %d dropped", len(m.Dropped))
	}
}

func TestReceiver(t *testing.T) {
	var r Receiver
	t0 := time.Unix(1000, 0)
	if !r.Allow(t0) {
		t.Fatal("first message refused")
	}
	if r.Allow(t0.Add(10 * time.Second)) {
		t.Fatal("a flood taken")
	}
	if r.Allow(t0.Add(44 * time.Second)) {
		t.Fatal("a message 44 s after the last taken")
	}
	if !r.Allow(t0.Add(MinReceiveInterval)) {
		t.Fatal("a message a minute later refused")
	}
}

func TestPlausible(t *testing.T) {
	lo, lan, wan := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.168.1.5"), netip.MustParseAddr("8.8.8.8")
	tests := []struct {
		from netip.Addr
		addr string
		want bool
	}{
		{lo, "127.0.0.1:6881", true},
		{lan, "127.0.0.1:6881", false},
		{wan, "127.0.0.1:6881", false},
		{wan, "10.0.0.1:6881", false},
		{wan, "[fe80::1]:6881", false},
		{lan, "10.0.0.1:6881", true},
		{lo, "10.0.0.1:6881", true},
		{wan, "1.2.3.4:6881", true},
		{wan, "1.2.3.4:0", false},
		{wan, "0.0.0.0:1", false},
		{wan, "224.0.0.1:1", false},
		{wan, "255.255.255.255:1", false},
		{wan, "[::ffff:127.0.0.1]:1", false},
	}
	for _, tt := range tests {
		if got := Plausible(tt.from, ap(tt.addr)); got != tt.want {
			t.Errorf("Plausible(%v, %v) = %v", tt.from, tt.addr, got)
		}
	}
}
