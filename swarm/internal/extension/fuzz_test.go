package extension_test

import (
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/tbproxy/tbproxy/swarm/internal/extension"
)

// FuzzHandshake checks that no payload panics ParseHandshake, that what it
// returns respects the documented bounds, and that a parsed handshake
// marshals and parses back to itself.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte(libtorrentHandshake))
	lim := extension.Limits{}
	f.Fuzz(func(t *testing.T, payload []byte) {
		h, err := extension.ParseHandshake(payload, lim)
		if err != nil {
			return
		}
		if h.M == nil || len(h.M) > extension.DefaultMaxNames {
			t.Fatalf("bad M: %v", h.M)
		}
		for name, id := range h.M {
			if name == "" || len(name) > extension.MaxNameLen || id < 0 || id > 255 {
				t.Fatalf("bad entry %q: %d", name, id)
			}
		}
		if !utf8.ValidString(h.V) || len(h.V) > extension.MaxClientLen {
			t.Fatalf("bad V %q", h.V)
		}
		if h.MetadataSize < 0 || h.MetadataSize > extension.DefaultMaxMetadataSize {
			t.Fatalf("bad metadata_size %d", h.MetadataSize)
		}
		b, err := extension.MarshalHandshake(h)
		if err != nil {
			t.Fatalf("re-marshal of %+v: %v", h, err)
		}
		h2, err := extension.ParseHandshake(b, lim)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", b, err)
		}
		if !reflect.DeepEqual(h, h2) {
			t.Fatalf("round trip changed %+v into %+v", h, h2)
		}
		var p extension.Peer
		p.Update(h)
		for name, id := range h.M {
			got, ok := p.ID(name)
			if ok != (id != 0) || (ok && int(got) != id) {
				t.Fatalf("peer ID(%q) = %d, %v after handshake id %d", name, got, ok, id)
			}
		}
	})
}
