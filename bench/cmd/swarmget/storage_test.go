package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

func testTorrent(t *testing.T, content []byte, pieceLen int64) *metainfo.MetaInfo {
	t.Helper()
	path := filepath.Join(t.TempDir(), "content")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := metainfo.Build(context.Background(), path, metainfo.BuildOptions{PieceLength: pieceLen})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFileStorage(t *testing.T) {
	const pieceLen = 16 << 10
	content := bytes.Repeat([]byte("0123456789abcdef"), (2*pieceLen+100)/16+1)[:2*pieceLen+100]
	m := testTorrent(t, content, pieceLen)
	st, err := openFileStorage(t.TempDir(), m)
	if err != nil {
		t.Fatal(err)
	}
	// Last piece first, as a swarm may deliver it.
	for _, i := range []int{2, 0, 1} {
		if st.Verified(i) {
			t.Fatalf("piece %d verified before it was written", i)
		}
		end := min(int64(i+1)*pieceLen, int64(len(content)))
		if err := st.WritePiece(i, content[int64(i)*pieceLen:end]); err != nil {
			t.Fatal(err)
		}
		if err := st.MarkVerified(i); err != nil {
			t.Fatal(err)
		}
		if !st.Verified(i) {
			t.Fatalf("piece %d not verified after MarkVerified", i)
		}
	}
	got := make([]byte, len(content))
	if _, err := st.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Fatal("read back different bytes")
	}
	if err := st.WritePiece(2, make([]byte, pieceLen)); err == nil {
		t.Fatal("a piece overrunning the torrent was accepted")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkVerified(0); !errors.Is(err, swarm.ErrStorageClosed) {
		t.Fatalf("MarkVerified after Close: %v", err)
	}
}
