package swarm

import (
	"bytes"
	"context"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// fileStorage is a MemoryStorage that also keeps its bytes in a file, as
// the disk cache does, with some pieces reported as held in memory only.
type fileStorage struct {
	*MemoryStorage
	path     string
	memOnly  map[int]bool
	pieceLen int64
	opens    atomic.Int32
}

func (s *fileStorage) OnDisk(off, n int64) bool {
	for i := off / s.pieceLen; i <= (off+n-1)/s.pieceLen; i++ {
		if s.memOnly[int(i)] {
			return false
		}
	}
	return true
}

func (s *fileStorage) OpenFile() (*os.File, error) {
	s.opens.Add(1)
	return os.Open(s.path)
}

// fileSeed starts a seed whose storage is a fileStorage holding f, with
// fileData as the file's bytes.
func (f *fixture) fileSeed(t *testing.T, fileData []byte, memOnly ...int) (*Torrent, *fileStorage) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, fileData, 0o600); err != nil {
		t.Fatal(err)
	}
	st := &fileStorage{MemoryStorage: NewMemoryStorage(&f.meta.Info), path: path, memOnly: map[int]bool{}, pieceLen: f.meta.Info.PieceLength}
	for _, i := range memOnly {
		st.memOnly[i] = true
	}
	if err := st.Fill(bytes.NewReader(f.content)); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, Config{})
	tor, err := c.AddTorrent(f.meta, st, TorrentOptions{NoTrackers: true})
	if err != nil {
		t.Fatal(err)
	}
	return tor, st
}

// overTCP writes r to one end of a loopback TCP connection, so that the
// writer is a *net.TCPConn with its sendfile ReadFrom, and returns what
// the other end read.
func overTCP(t *testing.T, r *Reader) ([]byte, int64, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, werr := r.WriteTo(c)
	c.Close()
	return <-got, n, werr
}

func TestReaderWriteToSendsFromTheFile(t *testing.T) {
	f := newFixture(t, 3<<20+777, 256<<10)
	tor, st := f.fileSeed(t, f.content, 5) // piece 5 is in memory only
	ctx := context.Background()

	r := tor.NewReader(ctx)
	defer r.Close()
	got, n, err := overTCP(t, r)
	if err != nil || n != int64(len(f.content)) || !bytes.Equal(got, f.content) {
		t.Fatalf("whole torrent: wrote %d, err %v, %d bytes read back (equal %v)", n, err, len(got), bytes.Equal(got, f.content))
	}
	if st.opens.Load() == 0 {
		t.Fatal("the file was never opened: nothing went out with sendfile")
	}

	// A range in the middle of the file, across the in-memory piece.
	rr, err := tor.NewRangeReader(ctx, 0, 1<<20+3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	got, _, err = overTCP(t, rr)
	if want := f.content[1<<20+3 : 2<<20+3]; err != nil || !bytes.Equal(got, want) {
		t.Fatalf("range: err %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, want))
	}
	for _, r := range [][2]int64{{int64(len(f.content)) - 1, 2}, {10, math.MaxInt64}, {math.MaxInt64, 1}, {-1, 1}, {0, -1}} {
		if _, err := tor.NewRangeReader(ctx, 0, r[0], r[1]); err == nil {
			t.Fatalf("range %d+%d, outside a %d-byte file, was accepted", r[0], r[1], len(f.content))
		}
	}
}

func TestReaderWriteToPlainWriterCopies(t *testing.T) {
	f := newFixture(t, 1<<20+5, 64<<10)
	tor, st := f.fileSeed(t, f.content)
	r := tor.NewReader(context.Background())
	defer r.Close()
	var out bytes.Buffer
	n, err := r.WriteTo(struct{ io.Writer }{&out}) // no ReaderFrom
	if err != nil || n != int64(len(f.content)) || !bytes.Equal(out.Bytes(), f.content) {
		t.Fatalf("wrote %d, err %v", n, err)
	}
	if st.opens.Load() != 0 {
		t.Fatal("a writer without ReadFrom made the reader open the file")
	}
}

func TestReaderWriteToShortFileFallsBack(t *testing.T) {
	f := newFixture(t, 2<<20, 256<<10)
	// The file lost its tail behind the storage's back: the bytes that
	// are missing come through ReadAt instead of going out short.
	tor, _ := f.fileSeed(t, f.content[:1<<20+100])
	r := tor.NewReader(context.Background())
	defer r.Close()
	got, n, err := overTCP(t, r)
	if err != nil || n != int64(len(f.content)) || !bytes.Equal(got, f.content) {
		t.Fatalf("wrote %d, err %v, equal %v", n, err, bytes.Equal(got, f.content))
	}
}
