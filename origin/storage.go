package origin

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/tbproxy/tbproxy/metainfo"
)

// FileStorage serves a published torrent's bytes straight from the
// published files, read-only. It satisfies the swarm engine's Storage
// interface structurally: every piece is verified (the publisher hashed
// them) and writes are refused.
//
// It never serves bytes that changed since the hash: after every read it
// checks, with one fstat of the open file, that the size and modification
// time are still those the torrent was built from; if not, the read fails
// with ErrChanged, every later read does too, and onChange is called once.
// A file replaced by rename or deleted keeps serving its old bytes through
// the open descriptor, which still match the torrent. A write that keeps
// both size and modification time (a clock set back by hand, a write within
// the file system's timestamp granularity) is beyond what it can see.
type FileStorage struct {
	info     *metainfo.Info // immutable
	spans    []span         // one per info.Files entry, in torrent order; immutable
	onChange func()         // called once, by the first read that sees a change; may be nil

	closed  atomic.Bool // set by Close
	changed atomic.Bool // set once a change was seen; reads fail from then on
	once    sync.Once   // guards the onChange call
}

// span is one file of the torrent's byte stream.
type span struct {
	off, length int64
	f           *os.File // nil for a padding file, which reads as zeros
	version     Resource // the version the file must stay
}

// NewFileStorage opens the files of a torrent for seeding. files holds one
// Resource per entry of info.Files, in torrent order; a padding file's
// entry is ignored. Each file is opened once and must still have the size
// and modification time its Resource gives, and the length info gives.
// onChange, which may be nil, is called once when a read sees that a file
// changed; it runs on the reading goroutine and must not block (the wiring
// passes a function calling Publisher.Invalidate).
func NewFileStorage(info *metainfo.Info, files []Resource, onChange func()) (*FileStorage, error) {
	if len(files) != len(info.Files) {
		return nil, fmt.Errorf("origin: file storage: %d files for a torrent of %d", len(files), len(info.Files))
	}
	s := &FileStorage{info: info, spans: make([]span, len(files)), onChange: onChange}
	for i, tf := range info.Files {
		sp := span{off: tf.Offset, length: tf.Length}
		if !tf.Padding() {
			res := files[i]
			if res.Size != tf.Length {
				s.Close()
				return nil, fmt.Errorf("origin: file storage: %s: %w", res.Path, ErrChanged)
			}
			f, err := os.Open(res.Path)
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("origin: file storage: %w", err)
			}
			sp.f, sp.version = f, res
		}
		s.spans[i] = sp
		if sp.f != nil {
			if err := sp.check(); err != nil {
				s.Close()
				return nil, fmt.Errorf("origin: file storage: %s: %w", files[i].Path, err)
			}
		}
	}
	return s, nil
}

// check returns ErrChanged when the open file is no longer the version it
// was opened as, or the error of the fstat. A file deleted or replaced by
// a rename since keeps its bytes for the open descriptor, though its
// change time moved.
func (sp *span) check() error {
	st, err := sp.f.Stat()
	if err != nil {
		return err
	}
	if !isVersion(st, sp.version) && !(unlinked(st) && sizeAndTime(st, sp.version)) {
		return ErrChanged
	}
	return nil
}

// ReadAt reads len(p) bytes of the torrent's byte stream at off. It is safe
// for concurrent use.
func (s *FileStorage) ReadAt(p []byte, off int64) (int, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	if s.changed.Load() {
		return 0, ErrChanged
	}
	total := s.info.TotalLength
	if off < 0 {
		return 0, errors.New("origin: file storage: negative offset")
	}
	if off >= total {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < total {
		i := sort.Search(len(s.spans), func(i int) bool { return s.spans[i].off+s.spans[i].length > off })
		if i == len(s.spans) {
			break
		}
		sp := &s.spans[i]
		k := int(min(int64(len(p)-n), sp.off+sp.length-off))
		if sp.f == nil {
			clear(p[n : n+k])
		} else {
			m, err := sp.f.ReadAt(p[n:n+k], off-sp.off)
			// Check after the read: a write that reached these bytes moved
			// the modification time before its data landed.
			cerr := sp.check()
			if errors.Is(cerr, ErrChanged) || (cerr == nil && m < k && errors.Is(err, io.EOF)) {
				s.change()
				return 0, ErrChanged
			}
			if err == nil {
				err = cerr
			}
			if err != nil {
				if s.closed.Load() {
					return 0, ErrClosed
				}
				return 0, fmt.Errorf("origin: file storage: %w", err)
			}
		}
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *FileStorage) change() {
	s.changed.Store(true)
	if s.onChange != nil {
		s.once.Do(s.onChange)
	}
}

// WritePiece refuses: a published file is never written. It returns
// ErrReadOnly.
func (s *FileStorage) WritePiece(i int, data []byte) error { return ErrReadOnly }

// MarkVerified does nothing: every piece is verified from the start.
func (s *FileStorage) MarkVerified(i int) error { return nil }

// Verified reports true for every piece in range: the publisher hashed
// the files.
func (s *FileStorage) Verified(i int) bool { return i >= 0 && i < s.info.NumPieces() }

// Changed reports whether a read saw a file change; the storage serves
// nothing since.
func (s *FileStorage) Changed() bool { return s.changed.Load() }

// Close closes the files. Reads after Close return ErrClosed.
func (s *FileStorage) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	var err error
	for i := range s.spans {
		if f := s.spans[i].f; f != nil {
			err = errors.Join(err, f.Close())
		}
	}
	return err
}
