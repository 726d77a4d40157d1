package swarm

import (
	"crypto/sha1"
	"sync"

	"github.com/tbproxy/tbproxy/metainfo"
)

func checkPiece(info *metainfo.Info, i int, data []byte) bool {
	return sha1.Sum(data) == info.PieceHash(i)
}

// hashJob asks a worker to verify one assembled piece and, when it matches,
// to store it and mark it verified.
type hashJob struct {
	t      *Torrent
	piece  int
	buf    []byte
	hashed bool // already hashed, as it arrived: ok is the answer
	ok     bool
	stored bool // already written: only MarkVerified is left
}

// hashResult reports a hashJob back to its torrent's run loop.
type hashResult struct {
	piece int
	buf   []byte
	ok    bool  // the SHA-1 matched
	err   error // storing a matching piece failed
}

// hasher is the client's pool of hashing workers: blocking work kept off
// the run loops, on every core. Its queue is shared by every torrent of
// the client in arrival order, and submit never blocks, so a run loop
// never waits on workers that are waiting on it. The queue needs no cap
// of its own: each job is a piece buffer that the torrent's requests
// already bound.
type hasher struct {
	mu     sync.Mutex
	cond   *sync.Cond
	queue  []hashJob
	closed bool
	wg     sync.WaitGroup
}

func newHasher(workers int) *hasher {
	h := &hasher{}
	h.cond = sync.NewCond(&h.mu)
	for range workers {
		h.wg.Go(h.work)
	}
	return h
}

// next blocks until there is a job, or returns false once closed.
func (h *hasher) next() (hashJob, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.queue) == 0 && !h.closed {
		h.cond.Wait()
	}
	if len(h.queue) == 0 {
		return hashJob{}, false
	}
	j := h.queue[0]
	h.queue[0] = hashJob{}
	h.queue = h.queue[1:]
	return j, true
}

func (h *hasher) work() {
	for {
		j, ok := h.next()
		if !ok {
			return
		}
		select {
		case <-j.t.done:
			continue // the torrent is gone; nobody wants the answer
		default:
		}
		res := hashResult{piece: j.piece, buf: j.buf, ok: j.ok}
		if !j.hashed {
			res.ok = checkPiece(j.t.info, j.piece, j.buf)
		}
		if res.ok {
			if !j.stored {
				res.err = j.t.writePiece(j.piece, j.buf)
			}
			if res.err == nil {
				res.err = j.t.storage.MarkVerified(j.piece)
			}
		}
		select {
		case j.t.hashed <- res:
		case <-j.t.done:
		}
	}
}

// submit queues a job for the workers without blocking.
func (h *hasher) submit(j hashJob) {
	h.mu.Lock()
	h.queue = append(h.queue, j)
	h.mu.Unlock()
	h.cond.Signal()
}

// close stops the workers once the queue is empty.
func (h *hasher) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cond.Broadcast()
	h.wg.Wait()
}
