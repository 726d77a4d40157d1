package swarm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReviewSeekIntoFreeRangeIsRescued: a lazy torrent (as the proxy opens
// them) whose only source is a slow origin. A first reader at the start
// makes a web seed worker fetch one long free-running range (up to
// webJobBytes). A second reader then starts 6 MiB in: a player's seek.
// No peer can send its piece, so rescueStart must fetch it from the seed
// on one of its idle workers at once. Since the seed "is fetching" that
// piece already (it is at the far end of the first range),
// readyWebSeed and rescue now skip the seed, and the seek waits until the
// first range has streamed up to it: tens of seconds on a slow origin.
func TestReviewSeekIntoFreeRangeIsRescued(t *testing.T) {
	const pieceLen = 64 << 10
	f := newFixture(t, 8<<20, pieceLen)
	var sent atomic.Int64
	var mu sync.Mutex
	var ranges []string
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		http.ServeContent(slowWriter{w, &sent}, r, "f", time.Time{}, bytes.NewReader(f.content))
	}))
	t.Cleanup(origin.Close)
	tor, _ := leechWith(t, f.meta, Config{}, TorrentOptions{Lazy: true, StallBudget: 100 * time.Millisecond})
	if err := tor.AddWebSeed(WebSeed{URL: origin.URL + "/f", Origin: true}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := tor.NewReader(ctx)
	defer first.Close()
	if _, err := io.ReadFull(first, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}

	// Wait for the free-running range after the first piece's race: the
	// seed is now fetching, slowly, every piece up to the file's end.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		long := false
		for _, r := range ranges {
			long = long || r == fmt.Sprintf("bytes=%d-%d", pieceLen, len(f.content)-1)
		}
		asked := append([]string(nil), ranges...)
		mu.Unlock()
		if long {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no free-running range; ranges asked: %v", asked)
		}
		time.Sleep(10 * time.Millisecond)
	}

	const seekTo = 6 << 20
	seek, err := tor.NewRangeReader(ctx, 0, seekTo, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer seek.Close()
	got := make(chan error, 1)
	buf := make([]byte, 100)
	start := time.Now()
	go func() {
		_, err := io.ReadFull(seek, buf)
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, f.content[seekTo:seekTo+100]) {
			t.Fatal("wrong bytes")
		}
		mu.Lock()
		t.Logf("the seek got its bytes after %v; ranges %v", time.Since(start).Round(time.Millisecond), ranges)
		mu.Unlock()
	case <-time.After(5 * time.Second):
		mu.Lock()
		asked := append([]string(nil), ranges...)
		mu.Unlock()
		tor.Close() // ends the requests and the reads
		<-got
		t.Fatalf("a seek into the seed's running range got nothing in 5 s (the origin sends about 400 KB/s; ranges asked: %v)", asked)
	}
	tor.Close()
}
