package extension_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/tbproxy/tbproxy/swarm/internal/extension"
)

func TestRegistry(t *testing.T) {
	var r extension.Registry
	if got := r.Ours(); len(got) != 0 {
		t.Fatalf("empty registry Ours() = %v", got)
	}
	for i, name := range []string{extension.Metadata, extension.PEX, "tbproxy_custom"} {
		id, err := r.Register(name)
		if err != nil {
			t.Fatal(err)
		}
		if int(id) != i+1 {
			t.Fatalf("%s got id %d, want %d", name, id, i+1)
		}
	}
	tests := []struct {
		name    string
		wantErr error
	}{
		{extension.Metadata, extension.ErrDuplicate},
		{"tbproxy_custom", extension.ErrDuplicate},
		{"", extension.ErrBadName},
		{strings.Repeat("n", extension.MaxNameLen+1), extension.ErrBadName},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("register %.10q", tt.name), func(t *testing.T) {
			if _, err := r.Register(tt.name); !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
		})
	}
	if id, ok := r.Local(extension.PEX); !ok || id != 2 {
		t.Errorf("Local(ut_pex) = %d, %v", id, ok)
	}
	if _, ok := r.Local("nope"); ok {
		t.Error("Local of an unknown name succeeded")
	}
	for _, tt := range []struct {
		id   uint8
		name string
		ok   bool
	}{{0, "", false}, {1, extension.Metadata, true}, {3, "tbproxy_custom", true}, {4, "", false}, {255, "", false}} {
		if name, ok := r.NameOf(tt.id); name != tt.name || ok != tt.ok {
			t.Errorf("NameOf(%d) = %q, %v; want %q, %v", tt.id, name, ok, tt.name, tt.ok)
		}
	}
	ours := r.Ours()
	want := map[string]int{extension.Metadata: 1, extension.PEX: 2, "tbproxy_custom": 3}
	if !reflect.DeepEqual(ours, want) {
		t.Fatalf("Ours() = %v, want %v", ours, want)
	}
	ours["x"] = 9
	if _, ok := r.Local("x"); ok {
		t.Fatal("Ours() shares memory with the registry")
	}
}

func TestRegistryFull(t *testing.T) {
	var r extension.Registry
	for i := range 255 {
		id, err := r.Register(fmt.Sprintf("ext%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if int(id) != i+1 {
			t.Fatalf("id %d, want %d", id, i+1)
		}
	}
	if _, err := r.Register("one_too_many"); !errors.Is(err, extension.ErrFull) {
		t.Fatalf("error %v, want ErrFull", err)
	}
	if name, ok := r.NameOf(255); !ok || name != "ext254" {
		t.Fatalf("NameOf(255) = %q, %v", name, ok)
	}
}

func TestPeerUpdate(t *testing.T) {
	type lookup struct {
		name string
		id   uint8
		ok   bool
	}
	tests := []struct {
		name   string
		steps  []extension.Handshake
		lookup []lookup
		want   extension.Handshake // the merged view after all steps
	}{
		{
			name:   "no handshake",
			lookup: []lookup{{extension.Metadata, 0, false}},
			want:   extension.Handshake{M: map[string]int{}},
		},
		{
			name: "first handshake",
			steps: []extension.Handshake{
				{M: map[string]int{extension.Metadata: 3, extension.PEX: 1, "off": 0}, V: "x/1", P: 6881, Reqq: 250},
			},
			lookup: []lookup{{extension.Metadata, 3, true}, {extension.PEX, 1, true}, {"off", 0, false}},
			want:   extension.Handshake{M: map[string]int{extension.Metadata: 3, extension.PEX: 1}, V: "x/1", P: 6881, Reqq: 250},
		},
		{
			name: "later handshake disables one and keeps unmentioned",
			steps: []extension.Handshake{
				{M: map[string]int{extension.Metadata: 3, extension.PEX: 1}, P: 6881},
				{M: map[string]int{extension.PEX: 0}},
			},
			lookup: []lookup{{extension.Metadata, 3, true}, {extension.PEX, 0, false}},
			want:   extension.Handshake{M: map[string]int{extension.Metadata: 3}, P: 6881},
		},
		{
			name: "later handshake remaps and re-enables",
			steps: []extension.Handshake{
				{M: map[string]int{extension.Metadata: 3, extension.PEX: 1}},
				{M: map[string]int{extension.PEX: 0}},
				{M: map[string]int{extension.PEX: 9, extension.Metadata: 4}, MetadataSize: 1000, V: "y/2"},
			},
			lookup: []lookup{{extension.Metadata, 4, true}, {extension.PEX, 9, true}},
			want:   extension.Handshake{M: map[string]int{extension.Metadata: 4, extension.PEX: 9}, MetadataSize: 1000, V: "y/2"},
		},
		{
			name: "out of range ids ignored",
			steps: []extension.Handshake{
				{M: map[string]int{"a": 5}},
				{M: map[string]int{"a": 300, "b": -2, "c": 255}},
			},
			lookup: []lookup{{"a", 5, true}, {"b", 0, false}, {"c", 255, true}},
			want:   extension.Handshake{M: map[string]int{"a": 5, "c": 255}},
		},
		{
			name: "disabling an unknown name is harmless",
			steps: []extension.Handshake{
				{M: map[string]int{"never": 0}},
			},
			lookup: []lookup{{"never", 0, false}},
			want:   extension.Handshake{M: map[string]int{}},
		},
		{
			name: "other fields keep their latest non-zero value",
			steps: []extension.Handshake{
				{V: "a", P: 1, Reqq: 2, MetadataSize: 3, YourIP: []byte{1, 2, 3, 4}, IPv4: []byte{5, 6, 7, 8}},
				{P: 10, YourIP: []byte{9, 9, 9, 9}},
			},
			want: extension.Handshake{M: map[string]int{}, V: "a", P: 10, Reqq: 2, MetadataSize: 3, YourIP: []byte{9, 9, 9, 9}, IPv4: []byte{5, 6, 7, 8}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p extension.Peer
			for _, h := range tt.steps {
				p.Update(h)
			}
			if p.Received() != (len(tt.steps) > 0) {
				t.Errorf("Received() = %v after %d handshakes", p.Received(), len(tt.steps))
			}
			for _, l := range tt.lookup {
				if id, ok := p.ID(l.name); id != l.id || ok != l.ok {
					t.Errorf("ID(%q) = %d, %v; want %d, %v", l.name, id, ok, l.id, l.ok)
				}
			}
			if got := p.Handshake(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Handshake() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestPeerNamesBounded: later handshakes may remap and disable names, but
// not grow the table past what one handshake may carry (DefaultMaxNames).
func TestPeerNamesBounded(t *testing.T) {
	var p extension.Peer
	for round := range 40 {
		m := map[string]int{}
		for i := range extension.DefaultMaxNames {
			m[fmt.Sprintf("x_%d_%d", round, i)] = i + 1
		}
		p.Update(extension.Handshake{M: m})
	}
	if n := len(p.Handshake().M); n != extension.DefaultMaxNames {
		t.Fatalf("%d names kept after 40 handshakes, want %d", n, extension.DefaultMaxNames)
	}
	// A known name is still remapped, and one freed slot takes a new name.
	p.Update(extension.Handshake{M: map[string]int{"x_0_0": 200, "x_0_1": 0, "ut_metadata": 3}})
	if id, ok := p.ID("x_0_0"); !ok || id != 200 {
		t.Fatalf("remapped name: %d %v", id, ok)
	}
	if id, ok := p.ID("ut_metadata"); !ok || id != 3 {
		t.Fatalf("a name in a freed slot: %d %v", id, ok)
	}
}

func TestPeerCopies(t *testing.T) {
	ip := []byte{1, 2, 3, 4}
	var p extension.Peer
	p.Update(extension.Handshake{M: map[string]int{"a": 1}, YourIP: ip})
	ip[0] = 99
	h := p.Handshake()
	h.YourIP[1] = 99
	h.M["a"] = 7
	if got := p.Handshake(); got.YourIP[0] != 1 || got.YourIP[1] != 2 || got.M["a"] != 1 {
		t.Fatalf("peer shares memory: %+v", got)
	}
}
