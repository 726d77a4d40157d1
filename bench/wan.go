//go:build linux

package main

import (
	"net"
	"sync/atomic"
	"time"
)

// A relay with a round trip (newDelayRelay) is an emulated wide-area
// path in front of a server on loopback: nothing passes for one round
// trip after a connection opens (the handshake a real path would cost),
// then every chunk is delivered half a round trip after it was read, in
// each direction. Bandwidth is not limited. On loopback a proxy's own
// processing is most of a first byte; over this path the round trips
// are, as on a real network.

// delayedChunk is the most delayedPipe reads at once, and delayedQueue
// how many chunks it holds in flight: 8 MiB each way at the most.
const (
	delayedChunk = 32 << 10
	delayedQueue = 256
)

// delayedPipe is pipe over the emulated path: each chunk read from src
// is written to dst half a round trip after it was read, in order, and
// src's end passed on as dst's (a half close). A write that fails stops
// the reads, as pipe's does.
func (r *relay) delayedPipe(dst, src *net.TCPConn, count *atomic.Int64) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	q := make(chan chunk, delayedQueue)
	written := make(chan struct{})
	go func() {
		defer close(written)
		failed := false
		for c := range q {
			if failed {
				continue // drained, so that the reads never block
			}
			if !r.wait(time.Until(c.at)) {
				failed = true
			} else if _, err := dst.Write(c.b); err != nil {
				failed = true
			}
			if failed {
				_ = src.CloseRead()
			}
		}
		_ = dst.CloseWrite()
	}()
	for {
		b := make([]byte, delayedChunk)
		n, err := src.Read(b)
		if n > 0 {
			if count != nil {
				count.Add(int64(n))
			}
			q <- chunk{b: b[:n], at: time.Now().Add(r.rtt / 2)}
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-written
}

// wait waits d, or less if the relay closes first; it reports whether the
// whole wait passed.
func (r *relay) wait(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.quit:
		return false
	}
}
