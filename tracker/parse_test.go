package tracker

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseAnnounceResponse(t *testing.T) {
	type want struct {
		interval, minInterval time.Duration
		peers                 []netip.AddrPort
		complete, incomplete  int
		trackerID, warning    string
	}
	tests := []struct {
		name string
		body string
		lim  Limits
		want want
	}{
		{
			name: "compact",
			body: bdict("interval", bint(1800), "min interval", bint(900), "complete", bint(3), "incomplete", bint(7),
				"peers", bstr(compact("1.2.3.4:6881", "127.0.0.1:51413"))),
			want: want{interval: 1800 * time.Second, minInterval: 900 * time.Second, complete: 3, incomplete: 7,
				peers: addrs("1.2.3.4:6881", "127.0.0.1:51413")},
		},
		{
			name: "dictionary list",
			body: bdict("interval", bint(600), "peers", blist(
				bdict("ip", bstr("10.0.0.1"), "peer id", bstr(strings.Repeat("x", 20)), "port", bint(1)),
				bdict("ip", bstr("2001:db8::1"), "port", bint(65535)),
			)),
			want: want{interval: 600 * time.Second, minInterval: 300 * time.Second,
				peers: addrs("10.0.0.1:1", "[2001:db8::1]:65535")},
		},
		{
			name: "peers6",
			body: bdict("peers", bstr(compact("8.8.8.8:53")), "peers6", bstr(compact("[2001:db8::2]:443", "[::1]:80"))),
			want: want{interval: DefaultInterval, minInterval: 300 * time.Second,
				peers: addrs("8.8.8.8:53", "[2001:db8::2]:443", "[::1]:80")},
		},
		{
			name: "tracker id and warning sanitised",
			body: bdict("tracker id", bstr("abc\x00def"), "warning message", bstr("slow\x1b[31m down\u202e")),
			want: want{interval: DefaultInterval, minInterval: 300 * time.Second, peers: addrs(),
				trackerID: "abc\x00def", warning: "slow\uFFFD[31m down\uFFFD"},
		},
		{
			name: "overlong tracker id dropped",
			body: bdict("tracker id", bstr(strings.Repeat("t", 257))),
			want: want{interval: DefaultInterval, minInterval: 300 * time.Second, peers: addrs()},
		},
		{
			name: "compact length not a multiple of 6",
			body: bdict("peers", bstr(compact("1.1.1.1:1", "2.2.2.2:2")+"\x03\x03\x03")),
			want: want{interval: DefaultInterval, minInterval: 300 * time.Second, peers: addrs("1.1.1.1:1", "2.2.2.2:2")},
		},
		{
			name: "compact shorter than one entry",
			body: bdict("peers", bstr("\x01\x02\x03\x04\x05")),
			want: want{interval: DefaultInterval, minInterval: 300 * time.Second, peers: addrs()},
		},
		{
			name: "peers6 length not a multiple of 18",
			body: bdict("peers6", bstr(compact("[2001:db8::3]:3")+"\x20\x01\x0d")),
			want: want{interval: DefaultInterval, minInterval: 300 * time.Second, peers: addrs("[2001:db8::3]:3")},
		},
		{
			name: "bad non-compact entries skipped",
			body: bdict("peers", blist(
				bdict("port", bint(1)),                               // missing ip
				bdict("ip", bint(16909060), "port", bint(2)),         // ip an integer
				bdict("ip", blist(bstr("1.2.3.4")), "port", bint(3)), // ip a list
				bdict("ip", bstr("1.2.3.4")),                         // missing port
				bdict("ip", bstr("1.2.3.4"), "port", bstr("80")),     // port a string
				bdict("ip", bstr("1.2.3.4"), "port", bint(0)),        // port 0
				bdict("ip", bstr("1.2.3.4"), "port", bint(-1)),
				bdict("ip", bstr("1.2.3.4"), "port", bint(65536)),
				bdict("ip", bstr("tracker.example.com"), "port", bint(80)), // a DNS name: never resolved
				bdict("ip", bstr("1.2.3"), "port", bint(80)),
				bdict("ip", bstr("\x01\x02\x03\x04"), "port", bint(80)), // binary ip
				bdict("ip", bstr("fe80::1%eth0"), "port", bint(80)),     // zone
				bstr("not a dict"),
				bint(7),
				blist(),
				bdict("ip", bstr("::ffff:5.6.7.8"), "port", bint(8)), // mapped: unmapped, kept
				bdict("ip", bstr("9.9.9.9"), "port", bint(9)),
			)),
			want: want{interval: DefaultInterval, minInterval: 300 * time.Second, peers: addrs("5.6.7.8:8", "9.9.9.9:9")},
		},
		{
			name: "peers of the wrong type ignored",
			body: bdict("peers", bint(5), "peers6", blist()),
			want: want{interval: DefaultInterval, minInterval: 300 * time.Second, peers: addrs()},
		},
		{
			name: "unusable addresses skipped, loopback and private kept",
			body: bdict("peers", bstr(compact("0.0.0.0:1", "224.0.0.1:2", "255.255.255.255:3", "1.2.3.4:0",
				"127.0.0.1:4", "192.168.1.1:5", "1.2.3.4:6", "1.2.3.4:6")),
				"peers6", bstr(compact("[::]:1", "[ff02::1]:2", "[::ffff:10.1.1.1]:7"))),
			want: want{interval: DefaultInterval, minInterval: 300 * time.Second,
				peers: addrs("127.0.0.1:4", "192.168.1.1:5", "1.2.3.4:6", "10.1.1.1:7")},
		},
		{
			name: "interval 0",
			body: bdict("interval", bint(0)),
			want: want{interval: 300 * time.Second, minInterval: 300 * time.Second, peers: addrs()},
		},
		{
			name: "interval negative",
			body: bdict("interval", bint(-60), "min interval", bint(-1)),
			want: want{interval: 300 * time.Second, minInterval: 300 * time.Second, peers: addrs()},
		},
		{
			name: "interval 2^31",
			body: bdict("interval", bint(1<<31), "min interval", bint(1<<31)),
			want: want{interval: 24 * time.Hour, minInterval: 24 * time.Hour, peers: addrs()},
		},
		{
			name: "interval max int64",
			body: bdict("interval", bint(1<<63-1)),
			want: want{interval: 24 * time.Hour, minInterval: 300 * time.Second, peers: addrs()},
		},
		{
			name: "min interval above interval",
			body: bdict("interval", bint(600), "min interval", bint(3600)),
			want: want{interval: 600 * time.Second, minInterval: 600 * time.Second, peers: addrs()},
		},
		{
			name: "interval of the wrong type takes the default",
			body: bdict("interval", bstr("60"), "complete", bstr("x"), "incomplete", bint(-5)),
			want: want{interval: DefaultInterval, minInterval: 300 * time.Second, peers: addrs()},
		},
		{
			name: "lowered clamp bounds",
			body: bdict("interval", bint(2), "min interval", bint(0)),
			lim:  Limits{MinInterval: time.Second, MaxInterval: time.Minute},
			want: want{interval: 2 * time.Second, minInterval: time.Second, peers: addrs()},
		},
		{
			name: "default interval clamped by lowered max",
			body: bdict(),
			lim:  Limits{MinInterval: time.Second, MaxInterval: time.Minute},
			want: want{interval: time.Minute, minInterval: time.Second, peers: addrs()},
		},
		{
			name: "max peers across peers and peers6",
			body: bdict("peers", bstr(compact("1.1.1.1:1", "2.2.2.2:2")), "peers6", bstr(compact("[2001:db8::1]:1"))),
			lim:  Limits{MaxPeers: 2},
			want: want{interval: DefaultInterval, minInterval: 300 * time.Second, peers: addrs("1.1.1.1:1", "2.2.2.2:2")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAnnounceResponse([]byte(tt.body), tt.lim)
			if err != nil {
				t.Fatalf("ParseAnnounceResponse: %v", err)
			}
			w := tt.want
			if got.Interval != w.interval || got.MinInterval != w.minInterval {
				t.Errorf("interval, min = %v, %v; want %v, %v", got.Interval, got.MinInterval, w.interval, w.minInterval)
			}
			if got.Peers == nil {
				got.Peers = []netip.AddrPort{}
			}
			if !slices.Equal(got.Peers, w.peers) {
				t.Errorf("peers = %v; want %v", got.Peers, w.peers)
			}
			if got.Complete != w.complete || got.Incomplete != w.incomplete {
				t.Errorf("complete, incomplete = %d, %d; want %d, %d", got.Complete, got.Incomplete, w.complete, w.incomplete)
			}
			if got.TrackerID != w.trackerID || got.Warning != w.warning {
				t.Errorf("tracker id, warning = %q, %q; want %q, %q", got.TrackerID, got.Warning, w.trackerID, w.warning)
			}
		})
	}
}

func TestParseAnnounceResponseErrors(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		lim     Limits
		failure string // when set, a *FailureError with this reason
		msg     string // otherwise ErrBadResponse and this in the message
	}{
		{name: "failure reason", body: bdict("failure reason", bstr("unregistered torrent")), failure: "unregistered torrent"},
		{name: "failure reason wins over peers", body: bdict("failure reason", bstr("no"), "peers", bstr(compact("1.1.1.1:1"))), failure: "no"},
		{name: "failure reason sanitised", body: bdict("failure reason", bstr("bad\r\nSet-Cookie: x\x00\xff")), failure: "bad  Set-Cookie: x\uFFFD\uFFFD"},
		{name: "failure reason capped", body: bdict("failure reason", bstr(strings.Repeat("é", 1000))), failure: strings.Repeat("é", maxReasonLen/2)},
		{name: "failure reason not a string", body: bdict("failure reason", bint(1)), failure: "(failure reason is not a string)"},
		{name: "empty", body: "", msg: "empty body"},
		{name: "whitespace", body: " \r\n", msg: "empty body"},
		{name: "garbage", body: "hello, world", msg: "bad response"},
		{name: "binary garbage", body: "\x00\xff\xfe", msg: "bad response"},
		{name: "html", body: "<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", msg: "html"},
		{name: "html after whitespace", body: "\n  <html>", msg: "html"},
		{name: "list", body: blist(bint(1)), msg: "not a dictionary"},
		{name: "integer", body: bint(42), msg: "not a dictionary"},
		{name: "string", body: bstr("d8:intervali1ee"), msg: "not a dictionary"},
		{name: "truncated", body: "d8:intervali1800e5:peers", msg: "bad response"},
		{name: "trailing data", body: bdict() + "x", msg: "bad response"},
		{name: "unsorted keys", body: "d8:intervali1e5:peers0:8:completei1ee", msg: "bad response"},
		{name: "integer overflow", body: "d8:intervali99999999999999999999ee", msg: "bad response"},
		{name: "body above 1 MiB", body: bdict("peers", bstr(strings.Repeat("\x01\x02\x03\x04\x05\x06", 200_000))), msg: "larger than 1048576"},
		{name: "body above lowered cap", body: bdict("interval", bint(1800)), lim: Limits{MaxBody: 10}, msg: "larger than 10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAnnounceResponse([]byte(tt.body), tt.lim)
			if err == nil {
				t.Fatalf("no error; got %+v", got)
			}
			if tt.failure != "" {
				var fe *FailureError
				if !errors.As(err, &fe) {
					t.Fatalf("error %v is not a *FailureError", err)
				}
				if fe.Reason != tt.failure {
					t.Errorf("reason = %q; want %q", fe.Reason, tt.failure)
				}
				if errors.Is(err, ErrBadResponse) {
					t.Errorf("a failure reason is not a bad response")
				}
				return
			}
			if !errors.Is(err, ErrBadResponse) {
				t.Errorf("error %v does not wrap ErrBadResponse", err)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.HasPrefix(err.Error(), "tracker: ") {
				t.Errorf("error %q; want the tracker: prefix and %q", err, tt.msg)
			}
		})
	}
}

// TestParseManyPeers feeds 10^6 distinct compact peers.
func TestParseManyPeers(t *testing.T) {
	const n = 1_000_000
	peers := make([]byte, 0, 6*n)
	for i := range n {
		peers = binary.BigEndian.AppendUint32(peers, 10<<24|uint32(i)+1)
		peers = append(peers, 0x1a, 0xe1)
	}
	body := []byte(bdict("interval", bint(1800), "peers", bstr(string(peers))))

	tests := []struct {
		name string
		lim  Limits
		want int
	}{
		{"default cap", Limits{MaxBody: 8 << 20}, DefaultMaxPeers},
		{"lowered cap", Limits{MaxBody: 8 << 20, MaxPeers: 10}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAnnounceResponse(body, tt.lim)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Peers) != tt.want {
				t.Fatalf("got %d peers; want %d", len(got.Peers), tt.want)
			}
			if got.Peers[0] != netip.MustParseAddrPort("10.0.0.1:6881") {
				t.Errorf("first peer %v", got.Peers[0])
			}
		})
	}
	t.Run("default body cap", func(t *testing.T) {
		if _, err := ParseAnnounceResponse(body, Limits{}); !errors.Is(err, ErrBadResponse) {
			t.Fatalf("err = %v; want ErrBadResponse for a 6 MB body", err)
		}
	})
}

func TestParseScrapeResponse(t *testing.T) {
	h1 := strings.Repeat("\x01", 20)
	h2 := "\x00" + strings.Repeat("\xff", 19)
	tests := []struct {
		name    string
		body    string
		want    map[string]ScrapeResponse
		wantErr bool
	}{
		{
			name: "two files",
			body: bdict("files", bdict(
				h1, bdict("complete", bint(1), "downloaded", bint(2), "incomplete", bint(3)),
				h2, bdict("complete", bint(4)),
			)),
			want: map[string]ScrapeResponse{h1: {1, 2, 3}, h2: {Complete: 4}},
		},
		{
			name: "bad entries skipped",
			body: bdict("files", bdict(
				"short", bdict("complete", bint(1)),
				h1, bint(5),
				h2, bdict("complete", bstr("x"), "downloaded", bint(-3), "incomplete", bint(9)),
			)),
			want: map[string]ScrapeResponse{h2: {Incomplete: 9}},
		},
		{name: "no files", body: bdict(), want: map[string]ScrapeResponse{}},
		{name: "files not a dict", body: bdict("files", blist()), wantErr: true},
		{name: "failure", body: bdict("failure reason", bstr("no scrape")), wantErr: true},
		{name: "html", body: "<html>", wantErr: true},
		{name: "empty", body: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseScrapeResponse([]byte(tt.body), Limits{})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v; wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
			for k, w := range tt.want {
				var h [20]byte
				copy(h[:], k)
				if got[h] != w {
					t.Errorf("%x: got %+v; want %+v", h, got[h], w)
				}
			}
		})
	}
}

func TestEventString(t *testing.T) {
	tests := []struct {
		e    Event
		want string
	}{{None, "none"}, {Started, "started"}, {Completed, "completed"}, {Stopped, "stopped"}, {Event(9), "event(9)"}}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.e.String(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}
