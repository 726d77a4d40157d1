package cache

import (
	"bytes"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/tbproxy/tbproxy/metainfo"
)

// span is a half-open byte range [start, end) of a torrent's byte stream.
type span struct{ start, end int64 }

// memPiece is a verified piece kept in memory because its write failed.
type memPiece struct {
	data     []byte // the whole piece; never modified once stored
	verified bool   // MarkVerified was called for it
}

// entry is one cached torrent, shared by all of its handles.
type entry struct {
	s    *Store
	ih   metainfo.Hash
	dir  string // Store.Dir joined with the hex info-hash, never a name from the torrent
	meta *metainfo.MetaInfo
	info *metainfo.Info
	pads []span // BEP 47 padding files, sorted; never written, so they stay holes

	// ready is closed once the entry was created, loaded or rechecked; err
	// is written before, and says why the entry is unusable.
	ready chan struct{}
	err   error
	// rechecking is true from Open until the recheck ends.
	rechecking atomic.Bool
	// ioSem (capacity 1) serialises the writes of the entry's small files
	// and its deletion, so a completion record is never written into a
	// directory being removed.
	ioSem chan struct{}
	// created is true once the metainfo and the directory entries of a
	// new entry are durable; guarded by ioSem. Loaded and promoted
	// entries start out so.
	created bool
	// writes counts piece writes in flight; the evictor skips such entries.
	writes atomic.Int32
	// fileMu serialises the cache's changes to the data file with the
	// looks at it that tell them from changes made behind its back
	// (checkOutside, and each write's look before it writes).
	fileMu  sync.Mutex
	lastUse atomic.Int64 // Unix ns of the last use

	// Guarded by Store.mu.
	refs      int   // open handles
	pins      int   // active readers and downloads; a pinned entry is never evicted
	bytes     int64 // bytes on disk counted in Store.bytes
	overhead  int64 // bytes of the metainfo and completion record
	transient bool  // never persisted; deleted when refs drops to 0

	mu           sync.Mutex
	f            *os.File // the data file; nil once gone
	gone         error    // ErrEvicted or ErrClosed once the entry may no longer be used
	durable      bitset   // pieces on disk and verified; what the record holds
	written      bitset   // pieces whose bytes reached the data file (for accounting)
	overlay      map[int]*memPiece
	dirty        bool  // durable changed since the last record
	flushFailing bool  // the last flush failed; logged once until one succeeds
	completed    int64 // Unix ns of first completion, 0 before
	uploaded     int64 // bytes uploaded while cached
	recUse       int64 // lastUse in the last record written
	recUploaded  int64 // uploaded in the last record written
	// ownSize and ownMtime are the data file's size and mtime as the
	// cache itself last left it; the completion record names them, so that
	// after a change made behind the cache's back the next Open checks the
	// data again. seenSize and seenMtime are as checkOutside last saw them.
	ownSize, ownMtime   int64
	seenSize, seenMtime int64
	// suspect holds written pieces whose file changed behind the cache's
	// back (checkOutside), durable or still to be marked verified: each is
	// hashed again before it is read, and no record vouches for it until
	// then.
	suspect bitset
}

func newEntry(s *Store, ih metainfo.Hash, dir string, m *metainfo.MetaInfo, transient bool) *entry {
	n := m.Info.NumPieces()
	e := &entry{
		s:         s,
		ih:        ih,
		dir:       dir,
		meta:      m,
		info:      &m.Info,
		ready:     make(chan struct{}),
		ioSem:     make(chan struct{}, 1),
		transient: transient,
		durable:   newBitset(n),
		written:   newBitset(n),
		suspect:   newBitset(n),
		overlay:   map[int]*memPiece{},
	}
	for _, f := range m.Info.Files {
		if f.Padding() && f.Length > 0 {
			e.pads = append(e.pads, span{f.Offset, f.Offset + f.Length})
		}
	}
	return e
}

// eachData calls fn for each range of [start, end) that is not padding.
func (e *entry) eachData(start, end int64, fn func(a, b int64) error) error {
	k := sort.Search(len(e.pads), func(k int) bool { return e.pads[k].end > start })
	pos := start
	for pos < end {
		next := end
		if k < len(e.pads) && e.pads[k].start < end {
			next = max(pos, e.pads[k].start)
		}
		if next > pos {
			if err := fn(pos, next); err != nil {
				return err
			}
		}
		if next == end {
			break
		}
		pos = min(end, e.pads[k].end)
		k++
	}
	return nil
}

// dataLen is the number of bytes of piece i that are stored on disk.
func (e *entry) dataLen(i int) int64 {
	start := int64(i) * e.info.PieceLength
	var n int64
	e.eachData(start, start+e.info.PieceLen(i), func(a, b int64) error { n += b - a; return nil })
	return n
}

// dropOverlayLocked forgets the pieces held in memory and returns their
// bytes, which the caller takes off Store.memBytes. e.mu is held.
func (e *entry) dropOverlayLocked() int64 {
	var n int64
	for _, p := range e.overlay {
		n += int64(len(p.data))
	}
	clear(e.overlay)
	return n
}

func (e *entry) overlayVerifiedLocked() int {
	n := 0
	for _, p := range e.overlay {
		if p.verified {
			n++
		}
	}
	return n
}

func (e *entry) goneErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.gone
}

// Torrent is a handle on one cached torrent. It implements swarm.Storage:
// offsets are in the torrent's byte stream, and the methods are safe for
// concurrent use. Close it when done; the entry stays cached.
type Torrent struct {
	s      *Store
	e      *entry
	closed atomic.Bool
}

// ReadError reports that a verified piece could not be read back from
// disk. The piece has been dropped from the verified set (durably, at the
// next flush), so it must be fetched again; LostPiece says which.
type ReadError struct {
	InfoHash metainfo.Hash
	Piece    int
	Err      error
}

// Error says which piece of which torrent could not be read, and why.
func (e *ReadError) Error() string {
	return fmt.Sprintf("cache: reading piece %d of %s: %v", e.Piece, e.InfoHash, e.Err)
}

// Unwrap returns the underlying error.
func (e *ReadError) Unwrap() error { return e.Err }

// LostPiece is the piece that is no longer verified. An engine can find it
// with errors.As and an interface{ LostPiece() int } target.
func (e *ReadError) LostPiece() int { return e.Piece }

// InfoHash is the torrent's info-hash.
func (t *Torrent) InfoHash() metainfo.Hash { return t.e.ih }

// MetaInfo is the torrent's metainfo.
func (t *Torrent) MetaInfo() *metainfo.MetaInfo { return t.e.meta }

// ReadAt reads len(p) bytes at off from verified pieces: from the data
// file, or from memory for a piece whose write failed. A range that touches
// a piece that is not verified fails with a *ReadError wrapping
// ErrNotVerified. A read that fails on disk drops that piece from the
// verified set and returns a *ReadError.
func (t *Torrent) ReadAt(p []byte, off int64) (int, error) {
	if t.closed.Load() {
		return 0, ErrClosed
	}
	e := t.e
	total := e.info.TotalLength
	if off < 0 {
		return 0, errors.New("cache: negative offset")
	}
	if off >= total {
		return 0, io.EOF
	}
	short := int64(len(p)) > total-off
	if short {
		p = p[:total-off]
	}
	t.s.touch(e)
	pl := e.info.PieceLength
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		i := int(pos / pl)
		chunk := p[n:min(len(p), n+int(int64(i+1)*pl-pos))]
		f, mem, suspect, err := e.source(i)
		if err != nil {
			return n, err
		}
		if mem != nil {
			n += copy(chunk, mem[pos-int64(i)*pl:])
			continue
		}
		if suspect {
			if err := t.verifySuspect(i, f); err != nil {
				return n, err
			}
		}
		err = t.s.fault(FaultRead, e.ih, i)
		if err == nil {
			_, err = f.ReadAt(chunk, pos)
		}
		if err != nil {
			return n, t.readFailed(i, err)
		}
		n += len(chunk)
	}
	if short {
		return n, io.EOF
	}
	return n, nil
}

// source says where piece i is read from: the file, or memory, and
// whether the file's piece must be hashed again first.
func (e *entry) source(i int) (f *os.File, mem []byte, suspect bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gone != nil {
		return nil, nil, false, e.gone
	}
	if e.durable.has(i) {
		return e.f, nil, e.suspect.has(i), nil
	}
	if mp := e.overlay[i]; mp != nil && mp.verified {
		return nil, mp.data, false, nil
	}
	return nil, nil, false, &ReadError{InfoHash: e.ih, Piece: i, Err: ErrNotVerified}
}

// ErrChangedOnDisk is why a piece is dropped whose bytes in the data file
// no longer match its hash: something other than the cache changed them.
var ErrChangedOnDisk = errors.New("cache: piece changed on disk behind the cache's back")

// verifySuspect hashes piece i, suspect since its data file changed
// behind the cache's back. A piece that matches is trusted again; one
// that does not is dropped as lost, so that it is fetched again.
func (t *Torrent) verifySuspect(i int, f *os.File) error {
	e := t.e
	ok, err := e.matchesOnDisk(f, i, make([]byte, e.info.PieceLen(i)))
	if err != nil {
		return t.readFailed(i, err)
	}
	if !ok {
		return t.readFailed(i, ErrChangedOnDisk)
	}
	e.mu.Lock()
	e.suspect.clear(i)
	e.mu.Unlock()
	return nil
}

// matchesOnDisk reads piece i from f into buf, which is the piece's
// length, and reports whether it matches the piece's hash.
func (e *entry) matchesOnDisk(f *os.File, i int, buf []byte) (bool, error) {
	if _, err := f.ReadAt(buf, int64(i)*e.info.PieceLength); err != nil {
		return false, err
	}
	return sha1.Sum(buf) == e.info.PieceHash(i), nil
}

// checkOutside compares the data file with what the cache last saw of
// it. A change the cache did not make (another program, a disk tool)
// makes every written piece suspect. It reports how many pieces became
// so.
func (e *entry) checkOutside() int {
	e.fileMu.Lock()
	defer e.fileMu.Unlock()
	return e.checkOutsideLocked()
}

// checkOutsideLocked is checkOutside with fileMu held.
func (e *entry) checkOutsideLocked() int {
	e.mu.Lock()
	f, gone := e.f, e.gone
	e.mu.Unlock()
	if f == nil || gone != nil {
		return 0
	}
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	size, mtime := fi.Size(), fi.ModTime().UnixNano()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gone != nil || size == e.seenSize && mtime == e.seenMtime {
		return 0
	}
	e.seenSize, e.seenMtime = size, mtime
	// Pieces written but not yet marked verified too: MarkVerified keeps
	// the mark.
	n := 0
	for i := range e.info.NumPieces() {
		if e.written.has(i) && e.suspect.set(i) {
			n++
		}
	}
	if n > 0 {
		e.dirty = true
	}
	return n
}

// noteOwn records the data file's size and mtime after the cache changed
// it, with fileMu held (or before the entry is shared).
func (e *entry) noteOwn(f *os.File) {
	fi, err := f.Stat()
	if err != nil {
		return
	}
	e.mu.Lock()
	e.ownSize, e.ownMtime = fi.Size(), fi.ModTime().UnixNano()
	e.seenSize, e.seenMtime = e.ownSize, e.ownMtime
	e.mu.Unlock()
}

// readFailed drops piece i after its read failed, unless the failure came
// from the entry or handle being closed.
func (t *Torrent) readFailed(i int, err error) error {
	e := t.e
	if g := e.goneErr(); g != nil {
		return g
	}
	if t.closed.Load() {
		return ErrClosed
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF // the file is shorter than the torrent
	}
	e.mu.Lock()
	if e.durable.clear(i) {
		e.dirty = true
	}
	e.suspect.clear(i)
	e.mu.Unlock()
	t.s.readErrors.Add(1)
	t.s.log.Warn("reading a verified piece failed; dropped it", "infohash", e.ih, "piece", i, "err", err)
	t.s.signal(t.s.flushCh)
	return &ReadError{InfoHash: e.ih, Piece: i, Err: err}
}

// writeChunk is the most WritePiece hands the kernel in one write, about
// the size of curl's writes. The page cache allocates folios as large as a
// write, and on a VM whose freed memory goes back to the host (free page
// reporting) large folios tend to come from blocks the host must fault in
// again, at about 0.6 CPU-seconds per GiB copied. bench/README.md has the
// measurements: whole 1 MiB pieces cost two to three times the CPU of
// 256 KiB writes after an idle moment, and in the bench's full runs
// 256 KiB writes still paid that price in most runs, 64 KiB writes in
// some, and 16 KiB writes about as rarely as curl. Where memory is warm,
// 16 KiB writes cost about 0.1 CPU-seconds per GiB more than 256 KiB
// (the extra system calls; BenchmarkWritePiece shows it).
const writeChunk = 16 << 10

// writeChunks writes p at off in writeChunk pieces.
func writeChunks(f *os.File, p []byte, off int64) error {
	for len(p) > 0 {
		n := min(len(p), writeChunk)
		if _, err := f.WriteAt(p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// WritePiece writes the verified bytes of piece i at its offset, leaving
// padding ranges unwritten. When the disk write fails (full, or an I/O
// error), the piece is kept in memory within Config.MemoryFallback so that
// reads still find it, the error is counted and logged, and WritePiece
// returns nil; such a piece is never recorded as verified on disk. After
// ENOSPC, disk writes are suspended for Config.WriteRetry and pieces go
// straight to memory. When memory is full too, the error is returned and
// the piece must be fetched again.
func (t *Torrent) WritePiece(i int, data []byte) error {
	if t.closed.Load() {
		return ErrClosed
	}
	e := t.e
	if i < 0 || i >= e.info.NumPieces() {
		return fmt.Errorf("cache: piece %d out of range", i)
	}
	if int64(len(data)) != e.info.PieceLen(i) {
		return fmt.Errorf("cache: piece %d is %d bytes, want %d", i, len(data), e.info.PieceLen(i))
	}
	e.mu.Lock()
	f, gone := e.f, e.gone
	e.mu.Unlock()
	if gone != nil {
		return gone
	}
	e.writes.Add(1)
	defer e.writes.Add(-1)
	t.s.touch(e)
	if t.s.writesSuspended() {
		return t.keepInMemory(i, data, errSuspended)
	}
	err := t.s.fault(FaultWrite, e.ih, i)
	if err == nil {
		err = t.writeData(i, f, data)
	}
	if err != nil {
		return t.writeFailed(i, data, err)
	}
	e.mu.Lock()
	if e.gone != nil {
		g := e.gone
		e.mu.Unlock()
		return g
	}
	e.suspect.clear(i) // its verified bytes are written again
	first := e.written.set(i)
	var freed int64
	if mp := e.overlay[i]; mp != nil {
		// It failed before and has reached the disk now.
		freed = int64(len(mp.data))
		delete(e.overlay, i)
		if mp.verified && e.durable.set(i) {
			e.dirty = true
		}
	}
	e.mu.Unlock()
	if first || freed > 0 {
		s := t.s
		s.mu.Lock()
		s.memBytes -= freed
		if first && s.entries[e.ih] == e {
			add := e.dataLen(i)
			e.bytes += add
			s.bytes += add
		}
		over := s.bytes > s.cfg.MaxBytes
		s.mu.Unlock()
		if over {
			s.signal(s.evictCh)
		}
	}
	return nil
}

// writeData writes piece i's bytes, but for padding, into f. A change to
// the file made behind the cache's back is looked for first, so that it
// is not taken for the cache's own; what the file is afterwards, even
// after a write that failed part way, is the cache's own.
func (t *Torrent) writeData(i int, f *os.File, data []byte) error {
	e := t.e
	e.fileMu.Lock()
	defer e.fileMu.Unlock()
	if n := e.checkOutsideLocked(); n > 0 {
		t.s.logOutside(e, n)
	}
	defer e.noteOwn(f)
	start := int64(i) * e.info.PieceLength
	return e.eachData(start, start+int64(len(data)), func(a, b int64) error {
		return writeChunks(f, data[a-start:b-start], a)
	})
}

// errSuspended is why a piece goes to memory while writes are suspended.
var errSuspended = fmt.Errorf("disk writes suspended after the disk filled: %w", syscall.ENOSPC)

func (t *Torrent) writeFailed(i int, data []byte, err error) error {
	e, s := t.e, t.s
	if g := e.goneErr(); g != nil {
		return g
	}
	s.writeErrors.Add(1)
	if errors.Is(err, syscall.ENOSPC) {
		was := s.writesSuspended()
		s.suspended.Store(s.cfg.Now().Add(s.cfg.WriteRetry).UnixNano())
		if !was {
			s.log.Warn("disk full: suspending cache writes", "retry", s.cfg.WriteRetry)
		}
	}
	// The failed write may have changed what was on disk.
	e.mu.Lock()
	if e.durable.clear(i) {
		e.dirty = true
	}
	e.suspect.clear(i)
	e.mu.Unlock()
	return t.keepInMemory(i, data, err)
}

// keepInMemory holds a verified piece that is not on disk in the overlay,
// within Config.MemoryFallback, so that reads find it.
func (t *Torrent) keepInMemory(i int, data []byte, err error) error {
	e, s := t.e, t.s
	err = fmt.Errorf("cache: writing piece %d of %s: %w", i, e.ih, err)
	size := int64(len(data))
	s.mu.Lock()
	ok := s.memBytes+size <= s.cfg.MemoryFallback
	if ok {
		s.memBytes += size
	}
	s.mu.Unlock()
	quiet := errors.Is(err, errSuspended) // logged once when the suspension began
	if !ok {
		if !quiet {
			s.log.Warn("writing a verified piece failed", "infohash", e.ih, "piece", i, "err", err)
		}
		return err
	}
	buf := bytes.Clone(data)
	e.mu.Lock()
	gone, kept := e.gone, e.overlay[i] != nil
	if gone == nil && !kept {
		e.overlay[i] = &memPiece{data: buf}
	}
	e.mu.Unlock()
	if gone != nil || kept {
		s.mu.Lock()
		s.memBytes -= size
		s.mu.Unlock()
		if gone != nil {
			return gone
		}
	}
	if !quiet {
		s.log.Warn("writing a verified piece failed; serving it from memory", "infohash", e.ih, "piece", i, "err", err)
	}
	return nil
}

// MarkVerified records that piece i is written and verified. The record
// reaches the disk at the next flush (every Config.FlushInterval), after
// the data file has been synced; a piece kept in memory after a failed
// write is verified for reads but never recorded.
func (t *Torrent) MarkVerified(i int) error {
	if t.closed.Load() {
		return ErrClosed
	}
	e := t.e
	if i < 0 || i >= e.info.NumPieces() {
		return fmt.Errorf("cache: piece %d out of range", i)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gone != nil {
		return e.gone
	}
	if mp := e.overlay[i]; mp != nil {
		mp.verified = true
		return nil
	}
	if !e.written.has(i) {
		return fmt.Errorf("cache: piece %d marked verified before it was written", i)
	}
	if e.durable.set(i) {
		e.dirty = true
		if e.completed == 0 && e.durable.full() {
			e.completed = t.s.cfg.Now().UnixNano()
		}
	}
	return nil
}

// Verified reports whether piece i is verified: recorded on disk, or held
// in memory after a failed write.
func (t *Torrent) Verified(i int) bool {
	e := t.e
	if i < 0 || i >= e.info.NumPieces() {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.durable.has(i) {
		return true
	}
	mp := e.overlay[i]
	return mp != nil && mp.verified
}

// OnDisk reports whether every piece that [off, off+n) touches is verified
// and in the data file, where OpenFile reads it; a piece held in memory
// after a failed write is not.
func (t *Torrent) OnDisk(off, n int64) bool {
	e := t.e
	if t.closed.Load() || off < 0 || n <= 0 || off+n > e.info.TotalLength {
		return false
	}
	if !e.durableSpan(off, n) {
		return false
	}
	t.s.touch(e)
	return true
}

// durableSpan reports whether every piece [off, off+n) touches is durable.
func (e *entry) durableSpan(off, n int64) bool {
	pl := e.info.PieceLength
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gone != nil {
		return false
	}
	for i := int(off / pl); i <= int((off+n-1)/pl); i++ {
		if !e.durable.has(i) || e.suspect.has(i) {
			return false // a suspect piece is read through ReadAt, which hashes it
		}
	}
	return true
}

// OpenFile opens the torrent's data file for reading: each byte at its
// offset in the torrent's byte stream, padding as holes. Only the ranges
// OnDisk vouches for hold verified bytes. The caller closes the file.
func (t *Torrent) OpenFile() (*os.File, error) {
	if t.closed.Load() {
		return nil, ErrClosed
	}
	if err := t.e.goneErr(); err != nil {
		return nil, err
	}
	return os.Open(filepath.Join(t.e.dir, dataName))
}

// Pin marks the torrent as in use by an active reader or download, which
// keeps it from being evicted until release is called. Release is
// idempotent. When the cache is over its size, the release of a last pin
// wakes the evictor: a torrent that was too large to leave while it was
// streamed goes now, not at the next write.
func (t *Torrent) Pin() (release func()) {
	s, e := t.s, t.e
	s.mu.Lock()
	e.pins++
	s.mu.Unlock()
	t.s.touch(e)
	return sync.OnceFunc(func() {
		s.mu.Lock()
		e.pins--
		over := e.pins == 0 && s.bytes > s.cfg.MaxBytes
		s.mu.Unlock()
		if over {
			s.signal(s.evictCh)
		}
	})
}

// Touch makes the torrent the most recently used. Reads and writes touch
// it too.
func (t *Torrent) Touch() { t.s.touch(t.e) }

// AddUploaded adds n bytes to the count of bytes uploaded while cached,
// which a SeedPolicy with a Ratio consults. It is recorded with the
// completion record.
func (t *Torrent) AddUploaded(n int64) {
	e := t.e
	e.mu.Lock()
	e.uploaded += n
	e.mu.Unlock()
}

// Seeding reports whether Config.Seed still allows the torrent to be
// seeded. It is always false for a transient torrent.
func (t *Torrent) Seeding() bool {
	e := t.e
	t.s.mu.Lock()
	transient := e.transient
	t.s.mu.Unlock()
	if transient {
		return false
	}
	e.mu.Lock()
	uploaded, completed := e.uploaded, e.completed
	e.mu.Unlock()
	return t.s.cfg.Seed.allows(e.info.TotalLength, uploaded, completed, t.s.cfg.Now())
}

// Close releases the handle. The last handle of a persistent torrent
// records its completion synchronously and frees pieces held in memory;
// the last handle of a transient torrent deletes its files.
func (t *Torrent) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	return t.s.release(t.e)
}
