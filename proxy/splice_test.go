package proxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// spliceWorld is a proxy and a plain origin on loopback that serves
// content at /file, with its Content-Length.
func spliceWorld(t *testing.T, content []byte, h http.HandlerFunc) (*Proxy, *http.Client, string) {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "file.bin", time.Time{}, bytes.NewReader(content))
		}
	}
	origin := httptest.NewServer(h)
	t.Cleanup(origin.Close)
	p, err := New(Config{Engine: newEngine(t), AllowPrivateUpstream: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, proxyClient(t, serveProxy(t, p), false), origin.URL + "/file"
}

// TestSplicePassThrough: a large plain body passed through goes from
// socket to socket (splice), byte-identical, whether the answer came to
// the negotiation or to the client's own request; its first bytes come
// through the buffers; the next request still works; HEAD has no body.
func TestSplicePassThrough(t *testing.T) {
	content := make([]byte, 4<<20+123)
	rand.Read(content)
	p, client, url := spliceWorld(t, content, nil)
	for _, accept := range []string{"", "application/x-bittorrent"} {
		// An Accept naming torrents is the client's own: the request
		// goes out plainly, not negotiated.
		before := p.spliced.Load()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("Accept %q: %d bytes (%v), want the %d sent", accept, len(got), err, len(content))
		}
		if resp.ContentLength != int64(len(content)) {
			t.Fatalf("Accept %q: Content-Length %d", accept, resp.ContentLength)
		}
		if n := p.spliced.Load() - before; n < int64(len(content))-512<<10 {
			t.Fatalf("Accept %q: %d bytes spliced of %d", accept, n, len(content))
		}
	}
	resp, err := client.Head(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(content)) {
		t.Fatalf("HEAD: %s, Content-Length %d", resp.Status, resp.ContentLength)
	}
	// A small body is copied, not spliced.
	before := p.spliced.Load()
	small, _ := http.NewRequest(http.MethodGet, url, nil)
	small.Header.Set("Range", "bytes=0-999")
	resp, err = client.Do(small)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, content[:1000]) || p.spliced.Load() != before {
		t.Fatalf("a small range: %s, %d bytes, %d spliced", resp.Status, len(got), p.spliced.Load()-before)
	}
}

// TestSpliceTruncated: an origin that stops short of its Content-Length
// leaves the client with a short body it can tell from a whole one (an
// unexpected EOF), never a silently truncated one.
func TestSpliceTruncated(t *testing.T) {
	content := make([]byte, 4<<20)
	rand.Read(content)
	_, client, url := spliceWorld(t, content, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		w.Write(content[:len(content)/2])
		panic(http.ErrAbortHandler) // the connection is cut
	})
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(got) >= len(content) {
		t.Fatalf("%d of %d bytes, error %v: want an unexpected EOF", len(got), len(content), err)
	}
}

// TestSpliceClientGone: a client that hangs up in the middle of a spliced
// body ends the transfer: the origin's connection is closed, so its
// handler stops writing (and TestMain finds no goroutine left behind).
func TestSpliceClientGone(t *testing.T) {
	ended := make(chan error, 1)
	_, client, url := spliceWorld(t, nil, gibOrigin(ended))
	resp := getSome(t, client, url)
	resp.Body.Close() // the client hangs up
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the origin sent the whole GiB to a client that had gone")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the origin still sends 10 s after the client went")
	}
}

// TestSpliceProxyClose: closing the proxy in the middle of a spliced body
// ends it at once: the client's connection is closed, the splice returns,
// and Close does not wait for the rest of the body.
func TestSpliceProxyClose(t *testing.T) {
	ended := make(chan error, 1)
	p, client, url := spliceWorld(t, nil, gibOrigin(ended))
	resp := getSome(t, client, url)
	defer resp.Body.Close()
	closed := make(chan struct{})
	go func() {
		p.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a spliced body")
	}
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatal("the client got the whole body of a transfer the proxy cut")
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the origin still sends 10 s after the proxy closed")
	}
}

// gibOrigin answers with a GiB, in MiB writes, and says on ended how the
// writing ended: nil once all was sent, else the error that stopped it.
func gibOrigin(ended chan<- error) http.HandlerFunc {
	chunk := make([]byte, 1<<20)
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(1<<30))
		for i := 0; i < 1<<10; i++ {
			if _, err := w.Write(chunk); err != nil {
				ended <- err
				return
			}
		}
		ended <- nil
	}
}

// getSome GETs url and reads the first 4 MiB of the body: the transfer is
// then well under way (spliced, for a large plain body).
func getSome(t *testing.T, client *http.Client, url string) *http.Response {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4<<20)); err != nil {
		resp.Body.Close()
		t.Fatal(err)
	}
	return resp
}

// TestChunkedPassThroughTruncated: an origin whose chunked answer
// breaks off mid-body (its connection closed before the last chunk) must
// reach the client as a broken body, as it would without the proxy; the
// proxy must never end it with a clean last chunk.
func TestChunkedPassThroughTruncated(t *testing.T) {
	w := newWorld(t, 64<<10)
	w.mux.HandleFunc("/stream.txt", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain")
		rw.WriteHeader(http.StatusOK)
		rw.Write([]byte(strings.Repeat("x", 5000)))
		rw.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(rw).Hijack()
		if err == nil {
			conn.Close() // no terminating chunk: the body is cut short
		}
	})
	// Without the proxy: the client sees the break.
	direct, err := http.Get(w.origin.URL + "/stream.txt")
	if err != nil {
		t.Fatal(err)
	}
	_, derr := io.ReadAll(direct.Body)
	direct.Body.Close()
	if derr == nil {
		t.Fatal("the test origin's answer is not broken")
	}
	resp, err := w.client.Get(w.origin.URL + "/stream.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("through the proxy: %d of a broken body's bytes ended cleanly (direct: %v); want a read error", len(body), derr)
	}
}
