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
	t     *Torrent
	piece int
	buf   []byte
}

// hashResult reports a hashJob back to its torrent's run loop.
type hashResult struct {
	piece int
	buf   []byte
	ok    bool  // the SHA-1 matched
	err   error // storing a matching piece failed
}

// hasher is the client's pool of hashing workers: blocking work kept off
// the run loops, on every core.
type hasher struct {
	jobs chan hashJob
	wg   sync.WaitGroup
}

func newHasher(workers int) *hasher {
	h := &hasher{jobs: make(chan hashJob, 4*workers)}
	for range workers {
		h.wg.Go(h.work)
	}
	return h
}

func (h *hasher) work() {
	for j := range h.jobs {
		res := hashResult{piece: j.piece, buf: j.buf, ok: checkPiece(j.t.info, j.piece, j.buf)}
		if res.ok {
			res.err = j.t.storage.WritePiece(j.piece, j.buf)
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

// trySubmit hands a job to a worker without blocking, so that a run loop
// never waits on workers that are waiting on it.
func (h *hasher) trySubmit(j hashJob) bool {
	select {
	case h.jobs <- j:
		return true
	default:
		return false
	}
}

func (h *hasher) close() {
	close(h.jobs)
	h.wg.Wait()
}
