package swarm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/tbproxy/tbproxy/metainfo"
)

// Storage holds the bytes of one torrent. The engine writes only pieces
// whose SHA-1 matched, each whole, and then marks them verified; it reads
// back only pieces that are verified. Offsets are in the torrent's byte
// stream: all files concatenated in torrent order.
//
// Methods may be called from several goroutines at once, for different
// pieces. The disk implementation lives in package cache.
type Storage interface {
	// ReadAt reads len(p) bytes at off. The range lies within verified
	// pieces.
	ReadAt(p []byte, off int64) (int, error)
	// WritePiece stores the verified bytes of piece i.
	WritePiece(i int, data []byte) error
	// MarkVerified records that piece i is stored and verified. Storage may
	// batch the record; a piece not yet recorded after a crash is fetched
	// again, never trusted.
	MarkVerified(i int) error
	// Verified reports whether piece i was verified, as of opening: the
	// engine asks once per piece when a torrent is added.
	Verified(i int) bool
	// Close releases the storage.
	Close() error
}

// FileStorage is a Storage that keeps the torrent's bytes in one file, each
// at its offset in the torrent's byte stream. A Reader writing to a socket
// sends verified ranges of that file with sendfile(2), without copying them
// through user space.
type FileStorage interface {
	Storage
	// OnDisk reports whether every piece that [off, off+n) touches is
	// verified and in the file (not only held in memory).
	OnDisk(off, n int64) bool
	// OpenFile opens the file for reading; the caller closes it.
	OpenFile() (*os.File, error)
}

// ErrStorageClosed is returned by a storage used after Close.
var ErrStorageClosed = errors.New("swarm: storage closed")

// MemoryStorage keeps a torrent in memory, a piece at a time as pieces
// arrive. It is for tests and for content that must not touch the disk.
type MemoryStorage struct {
	info *metainfo.Info

	mu       sync.RWMutex
	pieces   [][]byte // pieces[i] is nil until piece i is written
	verified []bool
	closed   bool
}

// NewMemoryStorage returns an empty in-memory storage for info.
func NewMemoryStorage(info *metainfo.Info) *MemoryStorage {
	n := info.NumPieces()
	return &MemoryStorage{info: info, pieces: make([][]byte, n), verified: make([]bool, n)}
}

// ReadAt implements Storage.
func (s *MemoryStorage) ReadAt(p []byte, off int64) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrStorageClosed
	}
	if off < 0 || off >= s.info.TotalLength {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < s.info.TotalLength {
		i := int(off / s.info.PieceLength)
		piece := s.pieces[i]
		if piece == nil {
			return n, fmt.Errorf("swarm: memory storage: piece %d not written", i)
		}
		c := copy(p[n:], piece[off-int64(i)*s.info.PieceLength:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WritePiece implements Storage.
func (s *MemoryStorage) WritePiece(i int, data []byte) error {
	if int64(len(data)) != s.info.PieceLen(i) {
		return fmt.Errorf("swarm: memory storage: piece %d is %d bytes, want %d", i, len(data), s.info.PieceLen(i))
	}
	buf := append([]byte(nil), data...) // copy outside the lock
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrStorageClosed
	}
	s.pieces[i] = buf
	return nil
}

// MarkVerified implements Storage.
func (s *MemoryStorage) MarkVerified(i int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrStorageClosed
	}
	if s.pieces[i] == nil {
		return fmt.Errorf("swarm: memory storage: piece %d marked verified before it was written", i)
	}
	s.verified[i] = true
	return nil
}

// Verified implements Storage.
func (s *MemoryStorage) Verified(i int) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.verified[i]
}

// Close implements Storage.
func (s *MemoryStorage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.pieces = nil
	return nil
}

// Fill stores and verifies all of content at once, as a seed that already
// holds the data would. It checks every piece hash and stops at the first
// mismatch.
func (s *MemoryStorage) Fill(content io.ReaderAt) error {
	for i := range s.info.NumPieces() {
		buf := make([]byte, s.info.PieceLen(i))
		if _, err := content.ReadAt(buf, int64(i)*s.info.PieceLength); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("swarm: reading piece %d: %w", i, err)
		}
		if !checkPiece(s.info, i, buf) {
			return fmt.Errorf("swarm: piece %d does not match its hash", i)
		}
		if err := s.WritePiece(i, buf); err != nil {
			return err
		}
		if err := s.MarkVerified(i); err != nil {
			return err
		}
	}
	return nil
}
