package tracker

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func seeded(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }

func TestBackoff(t *testing.T) {
	tests := []struct {
		fails int
		want  time.Duration
	}{
		{-1, 0}, {0, 0}, {1, 10 * time.Second}, {2, 25 * time.Second}, {3, 50 * time.Second},
		{10, 505 * time.Second}, {26, 3385 * time.Second}, {27, time.Hour}, {1000, time.Hour}, {1 << 62, time.Hour},
	}
	for _, tt := range tests {
		t.Run(time.Duration(tt.fails).String(), func(t *testing.T) {
			if got := Backoff(tt.fails); got != tt.want {
				t.Errorf("Backoff(%d) = %v; want %v", tt.fails, got, tt.want)
			}
		})
	}
}

func TestNewTiersDrops(t *testing.T) {
	tiers := NewTiers([][]string{
		{"http://a.example/announce", "ftp://b.example/announce", "wss://c.example", "file:///etc/passwd"},
		{"udp://d.example:6969", "http:///nohost", "::not a url", "", "http://a.example/announce"}, // the last repeats tier 0
		{"gopher://e.example"}, // tier left empty: removed
		{"HTTPS://f.example/announce"},
	}, seeded(1))
	if got, want := tiers.Dropped(), 8; got != want {
		t.Errorf("Dropped() = %d; want %d", got, want)
	}
	if got, want := tiers.Len(), 3; got != want {
		t.Errorf("Len() = %d; want %d", got, want)
	}
	want := [][]string{{"http://a.example/announce"}, {"udp://d.example:6969"}, {"HTTPS://f.example/announce"}}
	if got := tiers.URLs(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("URLs() = %q; want %q", got, want)
	}
	if u, w := NewTiers(nil, nil).Next(time.Now()); u != "" || w != 0 {
		t.Errorf("empty Next = %q, %v", u, w)
	}
}

func TestTiersShuffle(t *testing.T) {
	list := []string{"http://0/a", "http://1/a", "http://2/a", "http://3/a", "http://4/a", "http://5/a", "http://6/a", "http://7/a"}
	in := [][]string{list, {"udp://x:1", "udp://y:1"}}
	tests := []struct {
		name     string
		a, b     *rand.Rand
		sameWant bool
	}{
		{"same seed, same order", seeded(42), seeded(42), true},
		{"other seed, other order", seeded(42), seeded(43), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, y := NewTiers(in, tt.a).URLs(), NewTiers(in, tt.b).URLs()
			if same := slices.EqualFunc(x, y, slices.Equal); same != tt.sameWant {
				t.Errorf("orders %q and %q: same = %v", x, y, same)
			}
			for i := range in {
				sorted := slices.Sorted(slices.Values(x[i]))
				if !slices.Equal(sorted, in[i]) {
					t.Errorf("tier %d is %q: not a permutation of %q", i, x[i], in[i])
				}
			}
		})
	}
	if slices.Equal(NewTiers(in, seeded(42)).URLs()[0], list) {
		t.Error("seed 42 left the tier unshuffled")
	}
}

func TestTiersOrder(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	// Build then read back the shuffled order, so the test names trackers
	// by position.
	tr := NewTiers([][]string{{"http://a/announce", "http://b/announce"}, {"udp://c:1", "udp://d:1"}}, seeded(7))
	order := tr.URLs()
	a, b, c, d := order[0][0], order[0][1], order[1][0], order[1][1]

	type step struct {
		name     string
		do       func()
		at       time.Duration // Next is asked at t0+at
		want     string
		wantWait time.Duration
	}
	steps := []step{
		{name: "first of first tier", do: func() {}, want: a},
		{name: "failed tracker skipped", do: func() { tr.Failure(a, t0) }, want: b},
		{name: "whole tier down: next tier", do: func() { tr.Failure(b, t0.Add(time.Second)) }, want: c},
		{name: "second tier first failed", do: func() { tr.Failure(c, t0) }, want: d},
		{name: "all down: soonest, with wait", do: func() { tr.Failure(d, t0.Add(3*time.Second)) }, want: a, wantWait: 10 * time.Second},
		{name: "backoff over: back to the first tier", do: func() {}, at: 10 * time.Second, want: a},
		{name: "second failure backs off longer", do: func() { tr.Failure(a, t0.Add(10*time.Second)) }, at: 10500 * time.Millisecond, want: c},
		{name: "a still backing off at 34s", do: func() {}, at: 34 * time.Second, want: b},
		{name: "a free at 35s", do: func() {}, at: 35 * time.Second, want: a},
		{name: "success promotes within its tier", do: func() { tr.Success(b) }, at: 11 * time.Second, want: b},
		{name: "success of a later tier keeps tier order", do: func() { tr.Success(d) }, at: 11 * time.Second, want: b},
		{name: "unknown urls ignored", do: func() { tr.Failure("http://z/announce", t0); tr.Success("udp://z:1") }, at: 11 * time.Second, want: b},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			got, wait := tr.Next(t0.Add(s.at))
			if got != s.want || wait != s.wantWait {
				t.Errorf("Next = %q, %v; want %q, %v (tiers %q)", got, wait, s.want, s.wantWait, tr.URLs())
			}
		})
	}
	want := [][]string{{b, a}, {d, c}}
	if got := tr.URLs(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("final order %q; want %q", got, want)
	}
}

func TestTiersSuccessPromotion(t *testing.T) {
	in := []string{"http://1/announce", "http://2/announce", "http://3/announce", "http://4/announce"}
	tr := NewTiers([][]string{in}, seeded(3))
	before := tr.URLs()[0]
	third := before[2]
	tr.Success(third)
	want := []string{third, before[0], before[1], before[3]}
	if got := tr.URLs()[0]; !slices.Equal(got, want) {
		t.Errorf("after Success(%q): %q; want %q", third, got, want)
	}
	// Success also clears the backoff.
	now := time.Now()
	tr.Failure(third, now)
	tr.Failure(third, now)
	if got, _ := tr.Next(now); got != before[0] {
		t.Errorf("Next = %q; want %q while %q backs off", got, before[0], third)
	}
	tr.Success(third)
	if got, _ := tr.Next(now); got != third {
		t.Errorf("Next = %q; want %q after its success", got, third)
	}
}
