//go:build linux

package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// echoOnce serves one connection on ln: it reads until the client's half
// close, then writes back what it read, and closes.
func echoOnce(t *testing.T, ln net.Listener) <-chan error {
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		if err == nil {
			_, err = c.Write(b)
		}
		done <- err
	}()
	return done
}

// TestDelayRelay: bytes pass both ways intact, a half close passes on,
// nothing arrives before the path's round trips allow, and close ends
// every goroutine.
func TestDelayRelay(t *testing.T) {
	defer goleak.VerifyNone(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := echoOnce(t, ln)
	const rtt = 30 * time.Millisecond
	r, err := newDelayRelay(ln.Addr().String(), rtt)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()

	c, err := net.Dial("tcp", r.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := make([]byte, 3<<20) // many chunks, more than the queue holds at once
	rand.Read(want)
	start := time.Now()
	writeErr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		writeErr <- err
	}()
	var first time.Duration
	got := make([]byte, 0, len(want))
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 && len(got) == 0 {
			first = time.Since(start)
		}
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal("echo server:", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes back, not the %d sent", len(got), len(want))
	}
	if n := r.served.Load(); n != int64(len(want)) {
		t.Errorf("the relay counted %d bytes served, not %d", n, len(want))
	}
	// The handshake's round trip, half a one there and half back: a lower
	// bound the relay's own waits set, whatever the machine's speed.
	if first < 2*rtt {
		t.Errorf("the first byte came back after %v, before two round trips (%v)", first, 2*rtt)
	}
}

// TestDelayRelayClose: closing the relay ends a connection in the middle
// of its handshake wait and one that is idle.
func TestDelayRelayClose(t *testing.T) {
	defer goleak.VerifyNone(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	r, err := newDelayRelay(ln.Addr().String(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", r.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("waiting"))
	time.Sleep(20 * time.Millisecond) // let the relay accept it and start waiting
	r.close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection outlived its relay")
	}
}
