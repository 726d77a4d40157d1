// Package cache is tbproxy's on-disk piece store. It keeps the verified
// pieces of torrents under one directory, remembers durably which pieces
// were verified, bounds the bytes it holds by evicting whole torrents least
// recently used first, and lists what it holds so that it can be seeded
// again after a restart.
//
// A Store owns the directory. Each torrent lives in a subdirectory named by
// its hex info-hash and holds the metainfo, one sparse data file for the
// whole torrent's byte stream, and a small checksummed completion record.
// No file or directory name ever comes from a torrent. A *Torrent is one
// torrent's handle; it implements swarm.Storage structurally, since the
// cache does not import the engine.
//
// The package does not download, hash pieces it is given, or talk to peers:
// the engine verifies every piece before it is written. The cache hashes
// only to recheck data it can no longer vouch for (after a crash or a change
// behind its back). It does not decide what to seed: it keeps the seeding
// policy's inputs and answers whether a torrent should still be seeded.
package cache

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/tbproxy/tbproxy/metainfo"
)

// Defaults for the zero fields of Config.
const (
	DefaultMaxBytes       = 10 << 30
	DefaultFlushInterval  = time.Second
	DefaultMemoryFallback = 64 << 20
	DefaultWriteRetry     = 10 * time.Minute
)

// Operations passed to a FaultHook.
const (
	// FaultWrite is checked before a piece is written to its data file.
	FaultWrite = "write"
	// FaultRead is checked before a piece is read from its data file.
	FaultRead = "read"
	// FaultSync is checked before a data file is synced ahead of its
	// completion record; the piece is -1.
	FaultSync = "sync"
)

var (
	// ErrClosed is returned by a Store, or a Torrent handle, used after
	// Close, and by a transient torrent's handles once it was released.
	ErrClosed = errors.New("cache: closed")
	// ErrEvicted is returned by the handles of a torrent that was evicted.
	ErrEvicted = errors.New("cache: torrent evicted")
	// ErrPinned refuses to remove a torrent that is being streamed.
	ErrPinned = errors.New("cache: torrent in use")
	// ErrNotCached names a torrent the cache does not hold.
	ErrNotCached = errors.New("cache: torrent not cached")
	// ErrNotVerified is wrapped by the error of a read that touches a piece
	// that is not verified.
	ErrNotVerified = errors.New("cache: piece not verified")
)

// Names inside an entry's directory.
const (
	metaName   = "metainfo"
	dataName   = "data"
	recordName = "completion"
	tmpSuffix  = ".tmp"
)

// FaultHook lets tests inject I/O errors. It is called before each data
// write (FaultWrite), data read (FaultRead) and data sync (FaultSync); a
// non-nil result is treated as if the operating system had returned it.
type FaultHook func(op string, ih metainfo.Hash, piece int) error

// SeedPolicy says how long a cached torrent is offered to peers. The zero
// value seeds for as long as the torrent is cached.
type SeedPolicy struct {
	// Ratio stops seeding once the bytes uploaded while cached reach Ratio
	// times the torrent's length; 0 means no ratio limit.
	Ratio float64
	// Duration stops seeding this long after the torrent first completed;
	// 0 means no time limit.
	Duration time.Duration
}

// allows reports whether a torrent should still be seeded.
func (p SeedPolicy) allows(length, uploaded, completed int64, now time.Time) bool {
	if p.Ratio > 0 && float64(uploaded) >= p.Ratio*float64(length) {
		return false
	}
	if p.Duration > 0 && completed != 0 && now.Sub(time.Unix(0, completed)) >= p.Duration {
		return false
	}
	return true
}

// Config configures a Store. Every zero field takes the default its comment
// gives.
type Config struct {
	// Dir is the cache directory; it is created with mode 0700. Required.
	// The Store owns it: subdirectories named by a hex info-hash that do not
	// hold a usable entry are removed. Other names are left alone.
	Dir string
	// MaxBytes bounds the bytes on disk; 0 means DefaultMaxBytes (10 GiB).
	MaxBytes int64
	// FlushInterval is how often changed completion records are written;
	// 0 means DefaultFlushInterval (1 s).
	FlushInterval time.Duration
	// MemoryFallback bounds the bytes of verified pieces kept in memory
	// when their write to disk failed; 0 means DefaultMemoryFallback
	// (64 MiB), negative means none.
	MemoryFallback int64
	// WriteRetry is how long disk writes stay suspended after one failed
	// because the disk was full (ENOSPC); meanwhile verified pieces go
	// straight to memory. 0 means DefaultWriteRetry (10 min).
	WriteRetry time.Duration
	// Seed is the seeding policy that Torrent.Seeding and Entry.Seed apply.
	Seed SeedPolicy
	// OnEvict is called before an evicted torrent's files are deleted, so
	// that its user can stop it first. It runs on the Store's eviction
	// goroutine and must not call Store.Close, nor Store.Torrent for the
	// torrent being evicted.
	OnEvict func(ih metainfo.Hash)
	// Logger receives the cache's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Faults injects I/O errors in tests; nil in production.
	Faults FaultHook
}

// Stats is a snapshot of a Store's counters.
type Stats struct {
	BytesUsed   int64 // bytes the cached torrents occupy on disk
	MaxBytes    int64 // the bound on BytesUsed
	MemoryBytes int64 // verified pieces held in memory after failed writes
	// WritesSuspended is true while disk writes are suspended after the
	// disk filled up.
	WritesSuspended bool
	Torrents        int   // torrents cached, transient ones included
	Evictions       int64 // torrents evicted to keep within MaxBytes
	Hits            int64 // Torrent calls for a torrent that had verified pieces
	Misses          int64 // Torrent calls for a torrent that had none
	WriteErrors     int64 // piece writes to disk that failed
	ReadErrors      int64 // reads of verified pieces that failed; each dropped a piece
	Rechecks        int64 // torrents whose data was hashed again at open
}

// Entry describes one cached torrent, for re-adding it to the engine at
// startup.
type Entry struct {
	InfoHash metainfo.Hash
	MetaInfo *metainfo.MetaInfo // as stored when the torrent was first cached
	Verified int                // pieces verified, durably or (after a failed write) in memory
	Complete bool               // every piece is verified
	// Transient torrents came with Cache-Control private or no-store: they
	// are never persisted nor reseeded, and are deleted when released.
	Transient bool
	// Rechecking is true while the data is being hashed again; Verified
	// grows meanwhile, and Store.Torrent waits for the end.
	Rechecking bool
	// Seed reports whether the seeding policy still allows seeding.
	Seed      bool
	Bytes     int64     // bytes on disk
	LastUse   time.Time // the last read, write, Touch or Pin; it orders eviction
	Completed time.Time // when the torrent first completed; zero if it has not
	Uploaded  int64     // bytes uploaded while cached, as reported by AddUploaded
}

// Store is the cache: one directory of torrents. Its methods are safe for
// concurrent use.
type Store struct {
	cfg Config // defaults applied; immutable after Open
	log *slog.Logger

	stop    chan struct{}  // closed by Close
	wg      sync.WaitGroup // the flusher, the evictor and the rechecker
	evictCh chan struct{}  // capacity 1: wakes the evictor
	flushCh chan struct{}  // capacity 1: wakes the flusher

	// mru is the entry at the front of lru, read without the lock so that
	// touching the same torrent again costs no lock. Written under mu.
	mru atomic.Pointer[entry]

	// Counters reported by Stats.
	hits, misses, evictions atomic.Int64
	writeErrors, readErrors atomic.Int64
	rechecks                atomic.Int64

	warnedFull atomic.Bool  // logged once that nothing could be evicted
	suspended  atomic.Int64 // Unix ns until which disk writes are suspended; 0 when they are not

	mu       sync.Mutex
	closed   bool                                  // Close was called; no entry is created any more
	entries  map[metainfo.Hash]*entry              // every entry, ready or not, by info-hash
	lru      *simplelru.LRU[metainfo.Hash, *entry] // recency order of entries, same keys
	removing map[metainfo.Hash]chan struct{}       // directories being deleted; closed when done
	bytes    int64                                 // sum of entry.bytes over entries
	memBytes int64                                 // bytes held in every entry's overlay
}

// Open opens the cache in cfg.Dir, creating it if needed, and loads every
// entry in it. Entries whose metainfo is unusable are logged and removed.
// Entries whose data file changed behind the cache's back (its size or
// mtime differ from the completion record), or whose record is missing or
// corrupt, are hashed again by a background goroutine before they can be
// used; everything else is trusted as recorded.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("cache: no directory")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	switch {
	case cfg.MemoryFallback == 0:
		cfg.MemoryFallback = DefaultMemoryFallback
	case cfg.MemoryFallback < 0:
		cfg.MemoryFallback = 0
	}
	if cfg.WriteRetry <= 0 {
		cfg.WriteRetry = DefaultWriteRetry
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache: creating directory: %w", err)
	}
	lru, err := simplelru.NewLRU[metainfo.Hash, *entry](math.MaxInt32, nil)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	s := &Store{
		cfg:      cfg,
		log:      log.With("component", "cache"),
		stop:     make(chan struct{}),
		evictCh:  make(chan struct{}, 1),
		flushCh:  make(chan struct{}, 1),
		entries:  map[metainfo.Hash]*entry{},
		lru:      lru,
		removing: map[metainfo.Hash]chan struct{}{},
	}
	des, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("cache: reading directory: %w", err)
	}
	var loaded, recheck []*entry
	for _, de := range des {
		ih, ok := parseDirName(de.Name())
		if !ok {
			continue
		}
		e, needCheck, err := s.load(ih)
		if err != nil {
			s.log.Warn("removing unusable cache entry", "infohash", ih, "err", err)
			if err := os.RemoveAll(filepath.Join(cfg.Dir, de.Name())); err != nil {
				s.log.Error("removing cache entry", "infohash", ih, "err", err)
			}
			continue
		}
		loaded = append(loaded, e)
		if needCheck {
			recheck = append(recheck, e)
		}
	}
	slices.SortFunc(loaded, func(a, b *entry) int { return cmp.Compare(a.lastUse.Load(), b.lastUse.Load()) })
	for _, e := range loaded {
		s.entries[e.ih] = e
		s.lru.Add(e.ih, e)
		s.mru.Store(e)
		s.bytes += e.bytes
	}
	s.wg.Go(s.flusher)
	s.wg.Go(s.evictor)
	if len(recheck) > 0 {
		s.wg.Go(func() { s.recheckAll(recheck) })
	}
	s.signal(s.evictCh)
	return s, nil
}

// parseDirName accepts only the lower-case hex form of an info-hash, the
// one name the cache ever gives a directory.
func parseDirName(name string) (metainfo.Hash, bool) {
	if len(name) != 2*metainfo.HashSize || strings.ToLower(name) != name {
		return metainfo.Hash{}, false
	}
	ih, err := metainfo.ParseHash(name)
	if err != nil || ih.HexString() != name {
		return metainfo.Hash{}, false
	}
	return ih, true
}

// load reads one entry's directory. It reports whether the data must be
// hashed again before it is trusted.
func (s *Store) load(ih metainfo.Hash) (*entry, bool, error) {
	dir := filepath.Join(s.cfg.Dir, ih.HexString())
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, false, err
	}
	if !fi.IsDir() {
		return nil, false, errors.New("not a directory")
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, false, err
	}
	for _, de := range names {
		if strings.HasSuffix(de.Name(), tmpSuffix) {
			os.Remove(filepath.Join(dir, de.Name()))
		}
	}
	raw, err := readFileLimited(filepath.Join(dir, metaName), metainfo.DefaultMaxSize)
	if err != nil {
		return nil, false, fmt.Errorf("reading metainfo: %w", err)
	}
	m, err := metainfo.Parse(raw)
	if err != nil {
		return nil, false, err
	}
	if m.InfoHash != ih {
		return nil, false, fmt.Errorf("metainfo is for %s", m.InfoHash)
	}
	e := newEntry(s, ih, dir, m, false)
	e.created = true
	e.overhead = int64(len(raw)) + int64(recordLen(m.Info.NumPieces()))

	var rec *record
	// The record's size is known; a larger file (or one that never ends)
	// is not read, and the data is checked again.
	recRaw, recErr := readFileLimited(filepath.Join(dir, recordName), int64(recordLen(m.Info.NumPieces())))
	if recErr == nil {
		rec, recErr = decodeRecord(recRaw, ih, e.info)
	}
	f, err := os.OpenFile(filepath.Join(dir, dataName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("opening data: %w", err)
	}
	dfi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("opening data: %w", err)
	}
	e.f = f
	e.lastUse.Store(dfi.ModTime().UnixNano())
	needCheck := false
	switch {
	case recErr == nil && dfi.Size() == rec.dataSize && dfi.ModTime().UnixNano() == rec.dataMtime:
		e.durable = rec.verified
	default:
		why := "data file changed since it was recorded"
		if recErr != nil {
			why = recErr.Error()
		}
		if dfi.Size() != e.info.TotalLength {
			if err := f.Truncate(e.info.TotalLength); err != nil {
				f.Close()
				return nil, false, fmt.Errorf("resizing data: %w", err)
			}
			if dfi, err = f.Stat(); err != nil {
				f.Close()
				return nil, false, fmt.Errorf("opening data: %w", err)
			}
		}
		// A data file with no blocks holds nothing to find.
		needCheck = allocated(dfi) > 0
		e.dirty = !needCheck // a recheck records its own result
		s.log.Info("cache entry untrusted", "infohash", ih, "why", why, "recheck", needCheck)
	}
	if rec != nil {
		e.lastUse.Store(rec.lastUse)
		e.uploaded = rec.uploaded
		e.completed = rec.completed
		e.recUse, e.recUploaded = rec.lastUse, rec.uploaded
	}
	e.written = e.durable.clone()
	e.ownSize, e.ownMtime = dfi.Size(), dfi.ModTime().UnixNano()
	e.seenSize, e.seenMtime = e.ownSize, e.ownMtime
	e.bytes = allocated(dfi) + e.overhead
	if needCheck {
		e.rechecking.Store(true)
	} else {
		close(e.ready)
	}
	return e, needCheck, nil
}

func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%d bytes, limit %d", fi.Size(), limit)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// TorrentOptions configures Store.Torrent.
type TorrentOptions struct {
	// Transient marks metainfo that came with Cache-Control private or
	// no-store: the torrent's metainfo and completion are never written,
	// it is never reseeded, and its files are deleted when its last handle
	// is closed. A transient request for a torrent already cached as
	// persistent shares the persistent entry; a persistent request for a
	// transient one makes it persistent.
	Transient bool
}

// Torrent returns a handle on m's entry, creating the entry if the cache
// does not hold it. When the entry is being rechecked, Torrent waits for the
// recheck to end, so that Verified answers from a settled set. Each handle
// must be closed.
func (s *Store) Torrent(m *metainfo.MetaInfo, opts TorrentOptions) (*Torrent, error) {
	if m == nil || m.InfoHash.IsZero() || m.Info.PieceLength <= 0 || m.Info.NumPieces() == 0 ||
		m.Info.TotalLength <= 0 || int64(m.Info.NumPieces()) != (m.Info.TotalLength+m.Info.PieceLength-1)/m.Info.PieceLength {
		return nil, errors.New("cache: unusable metainfo")
	}
	ih := m.InfoHash
	var e *entry
	create := false
	for e == nil {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		if ch, ok := s.removing[ih]; ok {
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-s.stop:
				return nil, ErrClosed
			}
		}
		e = s.entries[ih]
		if e == nil {
			create = true
			e = newEntry(s, ih, filepath.Join(s.cfg.Dir, ih.HexString()), m, opts.Transient)
			e.lastUse.Store(s.cfg.Now().UnixNano())
			s.entries[ih] = e
			s.lru.Add(ih, e)
		} else {
			s.lru.Get(ih)
		}
		s.mru.Store(e)
		e.refs++
		s.mu.Unlock()
	}
	if create {
		s.create(e)
	}
	select {
	case <-e.ready:
	case <-s.stop:
		s.release(e)
		return nil, ErrClosed
	}
	if e.err != nil {
		s.release(e)
		return nil, e.err
	}
	if !opts.Transient {
		if err := s.promote(e); err != nil {
			s.release(e)
			return nil, err
		}
	}
	e.lastUse.Store(s.cfg.Now().UnixNano())
	e.mu.Lock()
	had := e.durable.count() > 0 || len(e.overlay) > 0
	e.mu.Unlock()
	if had {
		s.hits.Add(1)
	} else {
		s.misses.Add(1)
	}
	return &Torrent{s: s, e: e}, nil
}

// create makes a new entry's directory and files, then marks it ready, or
// failed and gone from the map.
func (s *Store) create(e *entry) {
	err := s.createFiles(e)
	if err != nil {
		s.log.Error("creating cache entry", "infohash", e.ih, "err", err)
		e.err = fmt.Errorf("cache: creating entry %s: %w", e.ih, err)
		s.mu.Lock()
		var ch chan struct{}
		if s.entries[e.ih] == e {
			ch = s.dropLocked(e)
		}
		s.mu.Unlock()
		close(e.ready)
		if ch != nil {
			s.destroy(e, ErrClosed, ch)
		}
		return
	}
	close(e.ready)
}

func (s *Store) createFiles(e *entry) error {
	s.mu.Lock()
	transient := e.transient
	s.mu.Unlock()
	// Nothing in the map names this directory, so whatever is there is a
	// leftover and must not be trusted.
	if err := os.RemoveAll(e.dir); err != nil {
		return err
	}
	if err := os.Mkdir(e.dir, 0o700); err != nil {
		return err
	}
	// Nothing is synced here: a new entry is on the path of a response's
	// first byte. The first flush syncs the metainfo and both directories
	// before it writes the completion record that would make the entry
	// worth loading (see flush); an entry that crashes before then is
	// found without a record and dropped.
	var overhead int64
	if !transient {
		raw, err := e.meta.Marshal()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(e.dir, metaName), raw, 0o600); err != nil {
			return err
		}
		overhead = int64(len(raw)) + int64(recordLen(e.info.NumPieces()))
	}
	f, err := os.OpenFile(filepath.Join(e.dir, dataName), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(e.info.TotalLength); err != nil {
		f.Close()
		return err
	}
	e.noteOwn(f)
	e.mu.Lock()
	gone := e.gone
	if gone == nil {
		e.f = f
	}
	e.mu.Unlock()
	if gone != nil {
		f.Close()
		return gone
	}
	s.mu.Lock()
	e.overhead = overhead
	if s.entries[e.ih] == e {
		e.bytes += overhead
		s.bytes += overhead
	}
	s.mu.Unlock()
	return nil
}

// promote makes a transient entry persistent: its metainfo is written and
// its completion will be recorded.
func (s *Store) promote(e *entry) error {
	s.mu.Lock()
	transient := e.transient
	s.mu.Unlock()
	if !transient {
		return nil
	}
	e.ioSem <- struct{}{}
	defer func() { <-e.ioSem }()
	s.mu.Lock()
	transient = e.transient
	s.mu.Unlock()
	if !transient {
		return nil
	}
	raw, err := e.meta.Marshal()
	if err == nil {
		err = writeFileAtomic(e.dir, metaName, raw)
	}
	if err == nil {
		err = syncDir(s.cfg.Dir)
	}
	if err != nil {
		return fmt.Errorf("cache: keeping %s: %w", e.ih, err)
	}
	e.created = true
	overhead := int64(len(raw)) + int64(recordLen(e.info.NumPieces()))
	s.mu.Lock()
	e.transient = false
	e.overhead += overhead
	if s.entries[e.ih] == e {
		e.bytes += overhead
		s.bytes += overhead
	}
	s.mu.Unlock()
	e.mu.Lock()
	e.dirty = true
	e.mu.Unlock()
	return nil
}

// release drops one handle's reference. The last handle of a transient
// entry deletes it; the last handle of a persistent one records its
// completion and frees the pieces held in memory.
func (s *Store) release(e *entry) error {
	s.mu.Lock()
	e.refs--
	if e.refs > 0 || s.closed || s.entries[e.ih] != e {
		s.mu.Unlock()
		return nil
	}
	select {
	case <-e.ready:
	default:
		// Still being created or rechecked; the creator holds a reference.
		s.mu.Unlock()
		return nil
	}
	if e.transient {
		ch := s.dropLocked(e)
		s.mu.Unlock()
		s.destroy(e, ErrClosed, ch)
		return nil
	}
	e.mu.Lock()
	s.memBytes -= e.dropOverlayLocked()
	e.mu.Unlock()
	s.mu.Unlock()
	return s.flush(e, true)
}

// dropLocked takes e out of the map and the recency order, and registers
// the removal of its directory. s.mu is held.
func (s *Store) dropLocked(e *entry) chan struct{} {
	delete(s.entries, e.ih)
	s.lru.Remove(e.ih)
	if s.mru.Load() == e {
		s.mru.Store(nil)
	}
	s.bytes -= e.bytes
	ch := make(chan struct{})
	s.removing[e.ih] = ch
	return ch
}

// destroy closes a dropped entry and deletes its directory, then lets
// Torrent calls waiting on ch create it afresh.
func (s *Store) destroy(e *entry, why error, ch chan struct{}) {
	e.mu.Lock()
	if e.gone == nil {
		e.gone = why
	}
	freed := e.dropOverlayLocked()
	f := e.f
	e.f = nil
	e.mu.Unlock()
	s.mu.Lock()
	s.memBytes -= freed
	s.mu.Unlock()
	e.ioSem <- struct{}{}
	if f != nil {
		f.Close()
	}
	if err := os.RemoveAll(e.dir); err != nil {
		s.log.Error("deleting cache entry", "infohash", e.ih, "err", err)
	}
	<-e.ioSem
	s.mu.Lock()
	delete(s.removing, e.ih)
	s.mu.Unlock()
	close(ch)
}

// Entries lists the cached torrents, most recently used first, for
// re-adding them to the engine at startup. Entries still being rechecked
// are listed with Rechecking set; entries that failed to load are not.
func (s *Store) Entries() []Entry {
	type row struct {
		e         *entry
		transient bool
		bytes     int64
	}
	s.mu.Lock()
	rows := make([]row, 0, len(s.entries))
	for _, e := range slices.Backward(s.lru.Values()) {
		rows = append(rows, row{e, e.transient, e.bytes})
	}
	s.mu.Unlock()
	now := s.cfg.Now()
	out := make([]Entry, 0, len(rows))
	for _, r := range rows {
		e := r.e
		select {
		case <-e.ready:
			if e.err != nil {
				continue
			}
		default:
			if !e.rechecking.Load() {
				continue // being created
			}
		}
		e.mu.Lock()
		verified := e.durable.count() + e.overlayVerifiedLocked()
		completed, uploaded := e.completed, e.uploaded
		e.mu.Unlock()
		ent := Entry{
			InfoHash:   e.ih,
			MetaInfo:   e.meta,
			Verified:   verified,
			Complete:   verified == e.info.NumPieces(),
			Transient:  r.transient,
			Rechecking: e.rechecking.Load(),
			Seed:       !r.transient && s.cfg.Seed.allows(e.info.TotalLength, uploaded, completed, now),
			Bytes:      r.bytes,
			LastUse:    time.Unix(0, e.lastUse.Load()),
			Uploaded:   uploaded,
		}
		if completed != 0 {
			ent.Completed = time.Unix(0, completed)
		}
		out = append(out, ent)
	}
	return out
}

// Stats returns a snapshot of the Store's counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	st := Stats{
		BytesUsed:   s.bytes,
		MaxBytes:    s.cfg.MaxBytes,
		MemoryBytes: s.memBytes,
		Torrents:    len(s.entries),
	}
	s.mu.Unlock()
	st.WritesSuspended = s.writesSuspended()
	st.Evictions = s.evictions.Load()
	st.Hits = s.hits.Load()
	st.Misses = s.misses.Load()
	st.WriteErrors = s.writeErrors.Load()
	st.ReadErrors = s.readErrors.Load()
	st.Rechecks = s.rechecks.Load()
	return st
}

// Close stops the Store's goroutines, records every entry's completion,
// deletes transient entries and closes every file. Handles still open
// return ErrClosed from then on.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()

	s.mu.Lock()
	all := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		all = append(all, e)
	}
	s.mu.Unlock()
	var errs []error
	for _, e := range all {
		<-e.ready // creation is short; rechecks ended with the rechecker
		if e.err == nil {
			if err := s.flush(e, true); err != nil {
				errs = append(errs, err)
			}
		}
		s.mu.Lock()
		transient := e.transient
		s.mu.Unlock()
		e.mu.Lock()
		if e.gone == nil {
			e.gone = ErrClosed
		}
		e.dropOverlayLocked()
		f := e.f
		e.f = nil
		e.mu.Unlock()
		e.ioSem <- struct{}{}
		if f != nil {
			if err := f.Close(); err != nil {
				errs = append(errs, fmt.Errorf("cache: closing %s: %w", e.ih, err))
			}
		}
		if transient {
			os.RemoveAll(e.dir)
		}
		<-e.ioSem
	}
	s.mu.Lock()
	s.memBytes = 0
	s.mu.Unlock()
	return errors.Join(errs...)
}

// signal wakes a goroutine without blocking.
func (s *Store) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *Store) fault(op string, ih metainfo.Hash, piece int) error {
	if s.cfg.Faults == nil {
		return nil
	}
	return s.cfg.Faults(op, ih, piece)
}

// writesSuspended reports whether disk writes are suspended after ENOSPC.
func (s *Store) writesSuspended() bool {
	until := s.suspended.Load()
	return until != 0 && s.cfg.Now().UnixNano() < until
}

// touch makes e the most recently used entry.
func (s *Store) touch(e *entry) {
	e.lastUse.Store(s.cfg.Now().UnixNano())
	if s.mru.Load() == e {
		return
	}
	s.mu.Lock()
	if s.entries[e.ih] == e {
		s.lru.Get(e.ih)
		s.mru.Store(e)
	}
	s.mu.Unlock()
}
