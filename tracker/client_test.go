package tracker

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/tbproxy/tbproxy/metainfo"
)

func TestClientDispatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/scrape" {
			io.WriteString(w, bdict("files", bdict(string(trickyHash[:]), bdict("complete", bint(1)))))
			return
		}
		io.WriteString(w, bdict("peers", bstr(compact("1.1.1.1:1"))))
	}))
	defer srv.Close()
	f := newFakeUDP(t, "udp4", "127.0.0.1:0", func(f *fakeUDP) {
		f.onAnnounce = func(req []byte, tid uint32) [][]byte {
			return [][]byte{udpAnnounceReply(tid, 60, 0, 0, compact("2.2.2.2:2"))}
		}
	})
	c := &Client{UDP: UDPClient{Retries: 1, BaseTimeout: 50e6}}
	var _ Announcer = c

	tests := []struct {
		name      string
		url       string
		wantPeers []string
		wantErr   error
	}{
		{"http", srv.URL + "/announce", []string{"1.1.1.1:1"}, nil},
		{"udp", f.url("/announce"), []string{"2.2.2.2:2"}, nil},
		{"ftp", "ftp://127.0.0.1/announce", nil, ErrUnsupportedScheme},
		{"wss", "wss://127.0.0.1/announce", nil, ErrUnsupportedScheme},
		{"no scheme", "//127.0.0.1/announce", nil, ErrUnsupportedScheme},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.Announce(context.Background(), tt.url, AnnounceRequest{})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v; want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(resp.Peers, addrs(tt.wantPeers...)) {
				t.Errorf("peers %v; want %v", resp.Peers, tt.wantPeers)
			}
		})
	}
	t.Run("scrape http", func(t *testing.T) {
		got, err := c.Scrape(context.Background(), srv.URL+"/announce", []metainfo.Hash{trickyHash})
		if err != nil || got[trickyHash].Complete != 1 {
			t.Fatalf("got %v, %v", got, err)
		}
	})
	t.Run("scrape bad scheme", func(t *testing.T) {
		if _, err := c.Scrape(context.Background(), "ws://x/announce", []metainfo.Hash{{}}); !errors.Is(err, ErrUnsupportedScheme) {
			t.Fatalf("err = %v", err)
		}
	})
}
