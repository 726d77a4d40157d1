package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// fileStorage is the simplest disk-backed swarm.Storage: one preallocated
// file holding the torrent's byte stream, written and read positionally,
// with the verified set kept in memory only. It never syncs, so it
// measures the engine and the page cache, not the disk.
type fileStorage struct {
	f        *os.File // positional I/O only, so safe from several goroutines
	pieceLen int64
	size     int64

	mu       sync.Mutex
	verified []bool // piece i is stored and its hash matched
	closed   bool   // set once by Close; every later call fails
}

var _ swarm.Storage = (*fileStorage)(nil)

// openFileStorage creates dir/<info-hash>.data, sized for the whole torrent.
// The name comes from the info-hash, never from the metainfo.
func openFileStorage(dir string, m *metainfo.MetaInfo) (*fileStorage, error) {
	path := filepath.Join(dir, m.InfoHash.HexString()+".data")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating data file: %w", err)
	}
	if err := preallocate(f, m.Info.TotalLength); err != nil {
		return nil, errors.Join(fmt.Errorf("preallocating %s: %w", path, err), f.Close())
	}
	return &fileStorage{
		f:        f,
		pieceLen: m.Info.PieceLength,
		size:     m.Info.TotalLength,
		verified: make([]bool, m.Info.NumPieces()),
	}, nil
}

// ReadAt implements swarm.Storage.
func (s *fileStorage) ReadAt(p []byte, off int64) (int, error) {
	if s.isClosed() {
		return 0, swarm.ErrStorageClosed
	}
	return s.f.ReadAt(p, off)
}

// WritePiece implements swarm.Storage.
func (s *fileStorage) WritePiece(i int, data []byte) error {
	if s.isClosed() {
		return swarm.ErrStorageClosed
	}
	off := int64(i) * s.pieceLen
	if off+int64(len(data)) > s.size {
		return fmt.Errorf("piece %d of %d bytes overruns the torrent", i, len(data))
	}
	// In 16 KiB writes, as tbproxy's cache writes (cache.writeChunk):
	// larger writes make the page cache take larger folios, which on this
	// VM often cost several times the CPU to fill (see bench/README.md).
	for len(data) > 0 {
		n := min(len(data), 16<<10)
		if _, err := s.f.WriteAt(data[:n], off); err != nil {
			return fmt.Errorf("writing piece %d: %w", i, err)
		}
		data, off = data[n:], off+int64(n)
	}
	return nil
}

// MarkVerified implements swarm.Storage.
func (s *fileStorage) MarkVerified(i int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return swarm.ErrStorageClosed
	}
	s.verified[i] = true
	return nil
}

// Verified implements swarm.Storage.
func (s *fileStorage) Verified(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.verified[i]
}

// Close implements swarm.Storage.
func (s *fileStorage) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	return s.f.Close()
}

func (s *fileStorage) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
