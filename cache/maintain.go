package cache

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// flusher writes the completion records of changed entries every
// FlushInterval, so that the data path never waits on a sync.
func (s *Store) flusher() {
	tick := time.NewTicker(s.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		case <-s.flushCh:
		}
		s.mu.Lock()
		list := make([]*entry, 0, len(s.entries))
		for _, e := range s.entries {
			list = append(list, e)
		}
		s.mu.Unlock()
		for _, e := range list {
			select {
			case <-e.ready:
				s.flush(e, false)
			default:
			}
		}
	}
}

// flush writes e's completion record when its verified set changed, or,
// with force, when its last use or upload count did. The data file is
// synced first, so that every piece the record names is on disk; the
// record is then replaced atomically. A failed flush leaves the entry
// dirty for the next one.
//
// First it looks for changes to the data file that the cache did not make
// (entry.checkOutside), for every entry, transient ones too: the record
// then no longer vouches for the pieces, and each is hashed again before
// it is read.
func (s *Store) flush(e *entry, force bool) error {
	if n := e.checkOutside(); n > 0 {
		s.logOutside(e, n)
	}
	e.ioSem <- struct{}{}
	defer func() { <-e.ioSem }()
	s.mu.Lock()
	transient := e.transient
	s.mu.Unlock()
	if transient {
		return nil
	}
	use := e.lastUse.Load()
	e.mu.Lock()
	stale := e.dirty || force && (use != e.recUse || e.uploaded != e.recUploaded)
	if e.f == nil || e.gone != nil || !stale {
		e.mu.Unlock()
		return nil
	}
	f := e.f
	rec := record{
		infoHash:    e.ih,
		totalLength: e.info.TotalLength,
		lastUse:     use,
		completed:   e.completed,
		uploaded:    e.uploaded,
		verified:    e.durable.andNot(e.suspect),
	}
	e.dirty = false
	e.mu.Unlock()

	err := s.fault(FaultSync, e.ih, -1)
	if err == nil {
		err = f.Sync()
	}
	if err == nil && !e.created {
		// The entry's creation synced nothing; a record must not reach
		// the disk before the metainfo and directory entries it needs.
		err = syncFile(filepath.Join(e.dir, metaName))
		if err == nil {
			err = syncDir(e.dir)
		}
		if err == nil {
			err = syncDir(s.cfg.Dir)
		}
		e.created = err == nil
	}
	if err == nil {
		// The file as the cache left it: a change made behind its back
		// since then makes the next Open check the data again.
		e.mu.Lock()
		rec.dataSize, rec.dataMtime = e.ownSize, e.ownMtime
		e.mu.Unlock()
		err = writeFileAtomic(e.dir, recordName, rec.marshal())
	}
	e.mu.Lock()
	wasFailing := e.flushFailing
	e.flushFailing = err != nil
	if err != nil {
		e.dirty = true
	} else {
		e.recUse, e.recUploaded = rec.lastUse, rec.uploaded
	}
	e.mu.Unlock()
	switch {
	case err != nil && !wasFailing:
		s.log.Warn("recording completion failed; will retry", "infohash", e.ih, "err", err)
	case err == nil && wasFailing:
		s.log.Info("recording completion works again", "infohash", e.ih)
	}
	if err != nil {
		return fmt.Errorf("cache: recording completion of %s: %w", e.ih, err)
	}
	return nil
}

// logOutside reports that n pieces of e became suspect.
func (s *Store) logOutside(e *entry, n int) {
	s.log.Warn("data file changed behind the cache's back; its pieces are hashed again before they are read",
		"infohash", e.ih, "pieces", n)
}

// evictor deletes least recently used torrents while the cache holds more
// than MaxBytes. Writes wake it; it runs apart from them so that the data
// path never waits on OnEvict or on deleting files.
func (s *Store) evictor() {
	for {
		select {
		case <-s.stop:
			return
		case <-s.evictCh:
			s.evict()
		}
	}
}

func (s *Store) evict() {
	for {
		s.mu.Lock()
		if s.closed || s.bytes <= s.cfg.MaxBytes {
			s.mu.Unlock()
			return
		}
		var victim *entry
		for _, e := range s.lru.Values() {
			if e.pins > 0 || e.writes.Load() > 0 {
				continue
			}
			select {
			case <-e.ready:
			default:
				continue
			}
			if e.err == nil {
				victim = e
				break
			}
		}
		if victim == nil {
			over := s.bytes - s.cfg.MaxBytes
			s.mu.Unlock()
			if !s.warnedFull.Swap(true) {
				s.log.Warn("cache over its size, but every torrent is in use", "over", over)
			}
			return
		}
		s.warnedFull.Store(false)
		freed := victim.bytes
		ch := s.dropLocked(victim)
		s.mu.Unlock()
		if s.cfg.OnEvict != nil {
			s.cfg.OnEvict(victim.ih)
		}
		s.destroy(victim, ErrEvicted, ch)
		s.evictions.Add(1)
		s.log.Info("evicted torrent", "infohash", victim.ih, "bytes", freed)
	}
}

// Remove deletes a cached torrent at once, as eviction would: OnEvict runs
// first, then its files go, and its open handles fail with ErrEvicted. A
// pinned torrent (one being streamed) is refused with ErrPinned; an
// unknown one with ErrNotCached.
func (s *Store) Remove(ih metainfo.Hash) error {
	s.mu.Lock()
	e := s.entries[ih]
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case e == nil:
		s.mu.Unlock()
		return ErrNotCached
	case e.pins > 0 || e.writes.Load() > 0:
		s.mu.Unlock()
		return ErrPinned
	}
	ch := s.dropLocked(e)
	s.mu.Unlock()
	if s.cfg.OnEvict != nil {
		s.cfg.OnEvict(ih)
	}
	s.destroy(e, ErrEvicted, ch)
	s.log.Info("removed torrent", "infohash", ih)
	return nil
}

// recheckAll hashes, one entry after another, the entries Open could not
// trust, and marks each ready when done. Those left when the Store closes
// fail with ErrClosed.
func (s *Store) recheckAll(list []*entry) {
	for k, e := range list {
		if !s.recheck(e) {
			for _, e := range list[k:] {
				e.err = ErrClosed
				e.rechecking.Store(false)
				close(e.ready)
			}
			return
		}
	}
}

// recheck hashes every piece of e on one worker per core, keeps the pieces
// that match, and records the result. It reports false if the Store
// closed first.
func (s *Store) recheck(e *entry) bool {
	s.rechecks.Add(1)
	start := s.cfg.Now()
	n := e.info.NumPieces()
	var next atomic.Int64
	var stopped atomic.Bool
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			buf := make([]byte, e.info.PieceLength)
			for {
				select {
				case <-s.stop:
					stopped.Store(true)
					return
				default:
				}
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if ok, _ := e.matchesOnDisk(e.f, i, buf[:e.info.PieceLen(i)]); ok {
					e.mu.Lock()
					e.durable.set(i)
					e.written.set(i)
					e.mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if stopped.Load() {
		// Partial results are never recorded: the next Open checks again.
		return false
	}
	e.mu.Lock()
	e.dirty = true
	verified := e.durable.count()
	if verified == n && e.completed == 0 {
		e.completed = s.cfg.Now().UnixNano()
	}
	e.mu.Unlock()
	s.flush(e, true)
	s.log.Info("recheck done", "infohash", e.ih, "verified", verified, "pieces", n, "took", s.cfg.Now().Sub(start))
	e.rechecking.Store(false)
	close(e.ready)
	return true
}
