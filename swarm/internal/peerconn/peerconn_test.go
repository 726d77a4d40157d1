package peerconn

import (
	"bufio"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipeConn is a Conn on one end of a TCP connection over loopback, and
// the other end, read through a wire decoder.
func pipeConn(t *testing.T, fast bool) (*Conn, *wire.Decoder, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	remote, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	local, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remote.Close() })
	c := New(local, nil, 1, wire.Handshake{}, false, Config{
		Fast: fast,
		ReadBlock: func(index, begin uint32, p []byte) error {
			for i := range p {
				p[i] = byte(index)
			}
			return nil
		},
	})
	t.Cleanup(c.Close)
	remote.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c, wire.NewDecoder(bufio.NewReader(remote), wire.Limits{}), remote
}

// TestCancelUploadInPlace: a cancelled upload leaves the queue in order;
// with the fast extension a reject takes its place, without it nothing
// is sent for it. A cancel for an upload not queued does nothing.
func TestCancelUploadInPlace(t *testing.T) {
	for _, fast := range []bool{true, false} {
		c, dec, _ := pipeConn(t, fast)
		c.Upload(1, 0, 100)
		c.Send(wire.Message{ID: wire.Have, Index: 5})
		c.Upload(2, 0, 100)
		c.Upload(1, 0, 100) // asked twice: one cancel takes one back
		if !c.CancelUpload(1, 0, 100) || c.CancelUpload(9, 0, 100) {
			t.Fatal("CancelUpload's report")
		}
		if n := c.QueuedUploads(); n != 2 {
			t.Fatalf("%d uploads queued after one of three was cancelled", n)
		}
		c.Send(wire.Message{ID: wire.Have, Index: 6})
		c.Start(make(chan Event, 1), make(chan struct{}))
		want := []wire.Message{
			{ID: wire.Piece, Index: 1},
			{ID: wire.Have, Index: 5},
			{ID: wire.Piece, Index: 2},
		}
		if fast {
			want = append(want, wire.Message{ID: wire.Reject, Index: 1, Length: 100})
		}
		want = append(want, wire.Message{ID: wire.Have, Index: 6})
		var m wire.Message
		for i, w := range want {
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("fast %v, message %d: %v", fast, i, err)
			}
			if m.ID != w.ID || m.Index != w.Index || w.ID == wire.Reject && m.Length != w.Length {
				t.Fatalf("fast %v, message %d: %v %d, want %v %d", fast, i, m.ID, m.Index, w.ID, w.Index)
			}
		}
	}
}

// TestQueueBounded: a connection whose writer lets more than MaxQueue
// messages wait (the peer does not read) is closed, and its queue goes.
func TestQueueBounded(t *testing.T) {
	c, _, remote := pipeConn(t, true)
	for range MaxQueue + 1 {
		c.Send(wire.Message{ID: wire.Have, Index: 1})
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if !closed {
		t.Fatal("a queue past MaxQueue did not close the connection")
	}
	var b [1]byte
	if _, err := remote.Read(b[:]); err == nil {
		t.Fatal("the connection is still open")
	}
}
