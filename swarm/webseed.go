package swarm

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm/internal/picker"
)

// WebSeed is an HTTP source of a torrent's bytes: a BEP 19 url-list entry,
// or the URL a client asked the proxy for.
type WebSeed struct {
	URL string
	// Origin says URL serves exactly file File of the torrent: the URL a
	// client asked for, whose answer was the torrent. Otherwise URL follows
	// BEP 19: one ending in "/" gets the torrent's name and file path
	// appended.
	Origin bool
	File   int
	// Skip, for a multi-file torrent's seed that is not Origin, is how
	// many leading components of each file's path URL already stands for:
	// 0 is BEP 19 (URL is the parent of the torrent's directory), 1 a URL
	// that is the torrent's directory itself. Every file's path must be
	// longer than Skip.
	Skip int
	// Header is sent with every request. Only an Origin seed gets one,
	// since it came from a request to that same origin; it must not carry
	// the BitTorrent Accept.
	Header http.Header
	// Dropped, when not nil, is called once if the torrent drops the seed,
	// with why; an error wrapping ErrWrongBytes says the seed serves other
	// bytes than the torrent's. It runs on the torrent's loop and must not
	// block.
	Dropped func(why error)
}

// ErrWrongBytes is why a web seed is dropped that sent bytes which failed
// the torrent's hashes: it serves another file.
var ErrWrongBytes = errors.New("swarm: web seed sent bytes that failed their hash")

// WebSeedMode trades origin load against speed.
type WebSeedMode int

const (
	// WebSeedRescue uses web seeds only when peers cannot deliver: when no
	// block has come from a peer for the stall budget, when a reader has
	// waited that long for its next bytes, and for the first piece of a
	// new (or seeking) reader that no connected peer can send at once,
	// which costs the origin one piece and saves the reader the trackers,
	// handshakes and unchoke before its first byte. The default: origins
	// stay idle while peers keep up.
	WebSeedRescue WebSeedMode = iota
	// WebSeedAlways fetches from web seeds alongside peers, for speed.
	WebSeedAlways
	// WebSeedRescueOnly is WebSeedRescue without the first-piece race:
	// the least origin load, the slowest start when peers are slow to come.
	WebSeedRescueOnly
)

var webSeedModeNames = [...]string{WebSeedRescue: "sparing", WebSeedAlways: "always", WebSeedRescueOnly: "rescue-only"}

func (m WebSeedMode) String() string { return enumString("WebSeedMode", webSeedModeNames[:], m) }

// MarshalText returns the mode's name.
func (m WebSeedMode) MarshalText() ([]byte, error) {
	return enumMarshal("web seed mode", webSeedModeNames[:], m)
}

// UnmarshalText parses "sparing" (WebSeedRescue), "always" or
// "rescue-only".
func (m *WebSeedMode) UnmarshalText(b []byte) error {
	v, err := enumParse[WebSeedMode]("web seed mode", webSeedModeNames[:], b)
	if err == nil {
		*m = v
	}
	return err
}

const (
	// webWorkers is how many requests run at once per web seed: the
	// per-host connection cap.
	webWorkers = 3
	// webJobBytes is the most one range request asks for.
	webJobBytes = 16 << 20
	// rescueBytes is how much a rescue takes from the stalled position.
	rescueBytes = 4 << 20
	// webMaxFailures drops a web seed after this many failures in a row;
	// an Origin seed is kept, and tried again at most webMaxFailures²
	// times Config.WebSeedRetry apart.
	webMaxFailures = 5
	// maxWebSeeds is the most web seeds a torrent keeps at once: a full
	// url-list (metainfo.MaxWebSeeds) and the URLs clients asked for it by.
	maxWebSeeds = metainfo.MaxWebSeeds + 28
	// DefaultStallBudget is how long a reader or the whole torrent may go
	// without progress from peers before web seeds step in.
	DefaultStallBudget = 2 * time.Second
)

// webSeed is the run loop's state for one web seed. It is also a peer to
// the picker, which treats it as one that has every piece it covers.
type webSeed struct {
	ws       WebSeed
	p        *peer // identity for the picker and for blame; not in Torrent.s.peers
	failures int   // in a row
	retryAt  time.Time
	dropped  bool
	workers  int                  // worker goroutines running
	jobs     map[*webJob]struct{} // queued or running, with pieces outstanding
}

// soon reports whether seed s is about to deliver piece i: i waits in one
// of its queued jobs, which its workers take before starting any new
// range, or is the piece a running job's answer brings next. Asked for it
// again, the seed would send the same bytes twice. The far pieces of a
// running range are not soon: a reader stuck on one of them (a seek) is
// rescued.
func (s *webSeed) soon(i int) bool {
	for job := range s.jobs {
		if job.outstanding[i] && (!job.running || i == job.next) {
			return true
		}
	}
	return false
}

// webJob is one range request: pieces [first, end) whose blocks are claimed
// for the seed.
type webJob struct {
	seed        *webSeed
	first, end  int
	outstanding map[int]bool // pieces not yet delivered
	next        int          // the first piece not yet settled: the answer brings them in order
	running     bool         // a worker has taken it
	race        bool         // a new reader's first piece (see Torrent.rescueStart)
}

func newWebJob(s *webSeed, first int) *webJob {
	return &webJob{seed: s, first: first, end: first, next: first, outstanding: map[int]bool{}}
}

// add puts piece i, the next after the job's end, into the job.
func (job *webJob) add(i int) {
	job.outstanding[i] = true
	job.end = i + 1
	job.seed.jobs[job] = struct{}{}
}

// settle takes piece i out of the job: delivered, or given up.
func (job *webJob) settle(i int) {
	if !job.outstanding[i] {
		return
	}
	delete(job.outstanding, i)
	for job.next < job.end && !job.outstanding[job.next] {
		job.next++
	}
	if len(job.outstanding) == 0 {
		delete(job.seed.jobs, job)
	}
}

// webPiece is one piece of a web seed's answer, handed to the loop.
type webPiece struct {
	job    *webJob
	piece  int
	buf    []byte // from the client's piece pool
	ok     bool   // it matched its hash (taken as it arrived)
	stored bool   // it matched and is written to storage
}

// AddWebSeed adds an HTTP source. Its workers start at once and fetch only
// as the torrent's WebSeedMode allows.
func (t *Torrent) AddWebSeed(ws WebSeed) error {
	u, err := url.Parse(ws.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("swarm: web seed %q: not an http or https URL", ws.URL)
	}
	if ws.Origin && (ws.File < 0 || ws.File >= len(t.info.Files)) {
		return fmt.Errorf("swarm: web seed for file %d: no such file", ws.File)
	}
	if ws.Skip != 0 && (ws.Origin || !t.info.MultiFile || ws.Skip < 0) {
		return fmt.Errorf("swarm: web seed %q: Skip %d is for a multi-file torrent's seed", redactURL(ws.URL), ws.Skip)
	}
	for _, f := range t.info.Files {
		if t.info.MultiFile && len(f.Path) <= ws.Skip {
			return fmt.Errorf("swarm: web seed %q: Skip %d leaves no path of %q", redactURL(ws.URL), ws.Skip, strings.Join(f.Path, "/"))
		}
	}
	if !ws.Origin {
		ws.Header = nil
	}
	var full bool
	ok := t.do(func() {
		live := 0
		for _, s := range t.s.webSeeds {
			if s.dropped {
				continue
			}
			if s.ws.URL == ws.URL {
				return
			}
			live++
		}
		if full = live >= maxWebSeeds; full {
			return
		}
		s := &webSeed{ws: ws, jobs: map[*webJob]struct{}{}}
		s.p = &peer{id: t.s.allocID(), web: s, connectedAt: t.client.now()}
		t.s.picker.AddPeer(picker.PeerID(s.p.id))
		t.s.picker.PeerHaveAll(picker.PeerID(s.p.id))
		t.s.webSeeds = append(t.s.webSeeds, s)
		for range webWorkers {
			s.workers++
			t.wg.Go(func() { t.webWorker(s) })
		}
	})
	switch {
	case !ok:
		return ErrClosed
	case full:
		return fmt.Errorf("swarm: web seed %q: the torrent has %d already", redactURL(ws.URL), maxWebSeeds)
	}
	return nil
}

// covers reports whether seed s can serve all of piece i.
func (t *Torrent) covers(s *webSeed, i int) bool {
	if !s.ws.Origin {
		return true
	}
	f := t.info.Files[s.ws.File]
	start := int64(i) * t.info.PieceLength
	return start >= f.Offset && start+t.info.PieceLen(i) <= f.Offset+f.Length
}

// webWake wakes idle web seed workers to look for work again.
func (t *Torrent) webWake() {
	close(t.s.webWakeCh)
	t.s.webWakeCh = make(chan struct{})
}

// peersStalled reports whether peers have delivered nothing for the stall
// budget: then web seeds fetch freely.
func (t *Torrent) peersStalled(now time.Time) bool {
	if t.noPeers() && (!t.hasPeerSources() || t.s.sourcesAnswered) {
		return true // no peer will come, or the sources found none: do not wait
	}
	last := t.s.lastDL
	if last.IsZero() {
		last = t.s.started
	}
	return now.Sub(last) >= t.stallBudget()
}

// Sourceless reports whether nothing but the torrent's Origin web seeds
// can still deliver it: no peer is connected, being dialled or known, the
// torrent has no way to find any (trackers, peer sources), and every other
// web seed (its url-list, or one added) has been dropped. A closed
// torrent is not sourceless: it delivers nothing at all.
func (t *Torrent) Sourceless() bool {
	var none bool
	t.do(func() {
		if !t.noPeers() || t.hasPeerSources() {
			return
		}
		for _, s := range t.s.webSeeds {
			if !s.dropped && !s.ws.Origin {
				return
			}
		}
		none = true
	})
	return none
}

// noPeers reports, on the loop, that no peer is connected, being
// dialled or known.
func (t *Torrent) noPeers() bool {
	return len(t.s.peers) == 0 && t.s.dialing == 0 && len(t.s.known) == 0
}

// hasPeerSources reports whether trackers or other sources may yet find
// peers.
func (t *Torrent) hasPeerSources() bool {
	return len(t.opts.PeerSources) > 0 || (!t.opts.NoTrackers && len(t.meta.Trackers()) > 0)
}

func (t *Torrent) stallBudget() time.Duration {
	if t.opts.StallBudget > 0 {
		return t.opts.StallBudget
	}
	return DefaultStallBudget
}

// nextWebJob runs on the loop: it picks a range for seed s, or returns a
// channel to wait on when there is nothing to do now.
func (t *Torrent) nextWebJob(s *webSeed) (*webJob, <-chan struct{}) {
	now := t.client.now()
	if s.dropped || now.Before(s.retryAt) {
		return nil, t.s.webWakeCh
	}
	// A rescue comes first: exactly the gap a reader is stuck on.
	for k, job := range t.s.ready {
		if job.seed == s {
			t.s.ready = append(t.s.ready[:k], t.s.ready[k+1:]...)
			job.running = true
			return job, nil
		}
	}
	start := -1
	if t.s.racing > 0 {
		// A reader's first piece is on its way: free-running ranges would
		// only share the origin's bandwidth with it.
		return nil, t.s.webWakeCh
	}
	if t.opts.WebSeedMode == WebSeedAlways || t.peersStalled(now) {
		start = t.firstWebPiece(s)
	}
	if start < 0 {
		return nil, t.s.webWakeCh
	}
	job := newWebJob(s, start)
	job.running = true
	var size int64
	for i := start; i < t.info.NumPieces() && size < webJobBytes && t.webEligible(s, i); i++ {
		t.s.out = t.s.picker.Claim(picker.PeerID(s.p.id), i, t.s.out[:0])
		job.add(i)
		size += t.info.PieceLen(i)
	}
	return job, nil
}

// webEligible: a piece seed s covers, that is wanted, and that nobody has
// started.
func (t *Torrent) webEligible(s *webSeed, i int) bool {
	return t.s.picker.Untouched(i) && t.s.picker.Wanted(i) && t.covers(s, i)
}

// firstWebPiece is where a free-running web seed starts: the readers'
// positions first, else the first wanted piece nobody has started.
func (t *Torrent) firstWebPiece(s *webSeed) int {
	best := -1
	for _, r := range t.s.readers {
		for i := r.piece; i < t.info.NumPieces() && i < r.piece+webJobBytes/int(t.info.PieceLength)+1; i++ {
			if t.webEligible(s, i) {
				if best < 0 || i < best {
					best = i
				}
				break
			}
		}
	}
	if best >= 0 {
		return best
	}
	for i := range t.info.NumPieces() {
		if t.webEligible(s, i) {
			return i
		}
	}
	return -1
}

// releaseWebID frees a dropped seed's picker ID once no worker of it can
// still report a job under that ID.
func (t *Torrent) releaseWebID(s *webSeed) {
	if s.dropped && s.workers == 0 && s.p.id != 0 {
		t.s.freeIDs = append(t.s.freeIDs, s.p.id)
		s.p.id = 0
	}
}

// webWorker runs one connection's worth of range requests for seed s.
func (t *Torrent) webWorker(s *webSeed) {
	defer t.do(func() {
		s.workers--
		t.releaseWebID(s)
	})
	for {
		var job *webJob
		var wait <-chan struct{}
		dropped := false
		if !t.do(func() {
			dropped = s.dropped
			if !dropped {
				job, wait = t.nextWebJob(s)
			}
		}) || dropped {
			return
		}
		if job == nil {
			select {
			case <-wait:
			case <-t.done:
				return
			}
			continue
		}
		err := t.fetch(job)
		if !t.do(func() { t.webJobDone(job, err) }) {
			return
		}
	}
}

// webJobDone returns what a job did not deliver to the pool and keeps the
// seed's failure count.
func (t *Torrent) webJobDone(job *webJob, err error) {
	if job.race {
		t.s.racing--
		t.webWake()
	}
	s := job.seed
	if s.dropped {
		delete(s.jobs, job)
		return // RemovePeer released the seed's claims
	}
	id := picker.PeerID(s.p.id)
	for i := range job.outstanding {
		for b := range t.blocksOf(i) {
			t.s.picker.Rejected(id, b)
		}
		job.settle(i)
	}
	if err == nil {
		s.failures = 0
		return
	}
	s.failures++
	backoff := min(s.failures, webMaxFailures)
	s.retryAt = t.client.now().Add(time.Duration(backoff*backoff) * t.client.cfg.WebSeedRetry)
	t.log.Info("web seed failed", "url", redactURL(s.ws.URL), "failures", s.failures, "err", err)
	// The URL a client asked for stays a source while it fails: an origin
	// that restarts or drops off the network for a while serves the
	// waiting reader again when it is back. Other seeds go.
	var bad *badAnswerError
	if errors.As(err, &bad) || s.failures >= webMaxFailures && !s.ws.Origin {
		t.dropWebSeed(s, err)
	}
	t.fillAll()
}

// blocksOf iterates the blocks of piece i.
func (t *Torrent) blocksOf(i int) func(func(picker.Block) bool) {
	return func(yield func(picker.Block) bool) {
		n := int(t.info.PieceLen(i))
		for begin := 0; begin < n; begin += blockSize {
			if !yield(picker.Block{Piece: i, Begin: begin, Length: min(blockSize, n-begin)}) {
				return
			}
		}
	}
}

func (t *Torrent) dropWebSeed(s *webSeed, why error) {
	if s.dropped {
		return
	}
	s.dropped = true
	// Its workers end, so its queued rescues would never run.
	kept := t.s.ready[:0]
	for _, job := range t.s.ready {
		switch {
		case job.seed != s:
			kept = append(kept, job)
		case job.race:
			t.s.racing--
		}
	}
	clear(t.s.ready[len(kept):])
	t.s.ready = kept
	t.s.picker.RemovePeer(picker.PeerID(s.p.id))
	t.releaseWebID(s)
	t.log.Info("web seed dropped", "url", redactURL(s.ws.URL), "why", why)
	if s.ws.Dropped != nil {
		s.ws.Dropped(why)
	}
	t.webWake()
	t.fillAll()
}

// onWebPiece files a piece a web seed delivered. Only the blocks still
// claimed by the seed are taken; the piece is hashed like any other.
func (t *Torrent) onWebPiece(wp webPiece) {
	job, s := wp.job, wp.job.seed
	job.settle(wp.piece)
	if s.dropped {
		t.client.putPiece(wp.buf)
		return
	}
	// When no other source has started the piece and every block is
	// taken, the answer's own buffer becomes the piece: no copy into a
	// fresh one (which, cold, costs page faults as well as the copy).
	whole := t.s.pieces[wp.piece] == nil
	type taken struct {
		b    picker.Block
		done bool
	}
	var got []taken
	for b := range t.blocksOf(wp.piece) {
		accepted, done, others := t.s.picker.Received(picker.PeerID(s.p.id), b)
		if !accepted {
			whole = false
			continue
		}
		t.fromWeb.Add(int64(b.Length))
		t.cancelOthers(b, others)
		got = append(got, taken{b, done})
	}
	if !whole || !got[len(got)-1].done {
		for _, g := range got {
			t.fileBlock(s.p, g.b, wp.buf[g.b.Begin:g.b.Begin+g.b.Length], g.done)
		}
		t.client.putPiece(wp.buf)
		return
	}
	t.moving(wp.piece)
	senders := make([]*peer, t.s.blocks)
	for k := range senders {
		senders[k] = s.p
	}
	// Hashed on the way in: the workers only store it.
	t.hash(hashJob{t: t, piece: wp.piece, buf: wp.buf, hashed: true, ok: wp.ok, stored: wp.stored}, senders)
}

// badAnswerError marks an answer that is not the expected representation:
// the seed is dropped at once, not retried.
type badAnswerError struct{ reason string }

func (e *badAnswerError) Error() string { return "swarm: web seed answer: " + e.reason }

// segment is one HTTP range of a job: bytes [off, off+n) of the resource
// at url, which hold bytes starting at pos of the torrent's stream.
type segment struct {
	url     string
	size    int64 // the resource's full length
	off, n  int64
	pos     int64
	padding bool // a BEP 47 padding file: zeros, never fetched
}

// segments maps the torrent bytes [pos, end) onto seed s's resources.
func (t *Torrent) segments(s *webSeed, pos, end int64) []segment {
	var out []segment
	for pos < end {
		fi, ok := t.info.FileAt(pos)
		if !ok {
			break
		}
		f := t.info.Files[fi]
		n := min(end, f.Offset+f.Length) - pos
		seg := segment{url: t.fileURL(s, fi), size: f.Length, off: pos - f.Offset, n: n, pos: pos, padding: f.Padding()}
		out = append(out, seg)
		pos += n
	}
	return out
}

// fileURL is where seed s serves file i.
func (t *Torrent) fileURL(s *webSeed, i int) string {
	if s.ws.Origin {
		return s.ws.URL
	}
	base := s.ws.URL
	if !t.info.MultiFile {
		if strings.HasSuffix(base, "/") {
			return base + url.PathEscape(t.info.Name)
		}
		return base
	}
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	path := t.info.Files[i].Path[s.ws.Skip:]
	parts := make([]string, len(path))
	for k, c := range path {
		parts[k] = url.PathEscape(c)
	}
	return base + strings.Join(parts, "/")
}

// fetch runs one job: range requests for its pieces, streamed piece by
// piece to the loop. It runs on a web worker goroutine.
func (t *Torrent) fetch(job *webJob) error {
	pl := t.info.PieceLength
	start := int64(job.first) * pl
	end := min(int64(job.end)*pl, t.info.TotalLength)
	f := &pieceFiller{t: t, job: job, piece: job.first, h: sha1.New()}
	defer f.release()
	for _, seg := range t.segments(job.seed, start, end) {
		if seg.padding {
			if err := f.zeros(seg.n); err != nil {
				return err
			}
			continue
		}
		if err := t.fetchSegment(job.seed, seg, f); err != nil {
			return err
		}
	}
	return nil
}

// pieceFiller assembles a web seed's answer into whole pieces. The answer
// is read straight into a piece buffer and hashed as it arrives, while
// the bytes are still in the CPU's cache and while the next ones are on
// the wire; a full piece goes to the loop with its SHA-1.
type pieceFiller struct {
	t      *Torrent
	job    *webJob
	piece  int
	buf    []byte // nil until the piece's first byte
	filled int
	h      hash.Hash
}

// space is where the next bytes of the answer go: the rest of the piece.
func (f *pieceFiller) space() []byte {
	if f.buf == nil {
		f.buf = f.t.client.getPiece(int(f.t.info.PieceLen(f.piece)))
		f.filled = 0
		f.h.Reset()
	}
	return f.buf[f.filled:]
}

// commit takes the n bytes just written at the start of space().
func (f *pieceFiller) commit(n int) error {
	f.h.Write(f.buf[f.filled : f.filled+n])
	f.filled += n
	if f.filled < len(f.buf) {
		return nil
	}
	var sum [sha1.Size]byte
	f.h.Sum(sum[:0])
	wp := webPiece{job: f.job, piece: f.piece, buf: f.buf, ok: sum == f.t.info.PieceHash(f.piece)}
	f.buf = nil
	// A piece that matches its hash is written at once, from this core's
	// cache: handed on, it would be cold by the time a hash worker wrote
	// it, and the copy into the page cache would cost twice as much. The
	// loop still decides whether the piece is taken (see onWebPiece).
	if wp.ok {
		wp.stored = f.t.writePiece(wp.piece, wp.buf) == nil
	}
	select {
	case f.t.webData <- wp:
	case <-f.t.done:
		f.t.client.putPiece(wp.buf)
		return ErrClosed
	}
	f.piece++
	return nil
}

// zeros fills n bytes of padding.
func (f *pieceFiller) zeros(n int64) error {
	for n > 0 {
		sp := f.space()
		k := int(min(int64(len(sp)), n))
		clear(sp[:k])
		if err := f.commit(k); err != nil {
			return err
		}
		n -= int64(k)
	}
	return nil
}

// readFrom reads exactly n bytes of r.
func (f *pieceFiller) readFrom(r io.Reader, n int64) error {
	for n > 0 {
		sp := f.space()
		if int64(len(sp)) > n {
			sp = sp[:n]
		}
		k, err := r.Read(sp)
		if k > 0 {
			if cerr := f.commit(k); cerr != nil {
				return cerr
			}
			n -= int64(k)
		}
		switch {
		case n == 0:
			return nil
		case err == io.EOF:
			return fmt.Errorf("swarm: web seed: answer ended %d bytes early", n)
		case err != nil:
			return fmt.Errorf("swarm: web seed: %w", err)
		}
	}
	return nil
}

// release returns a piece left unfinished.
func (f *pieceFiller) release() {
	if f.buf != nil {
		f.t.client.putPiece(f.buf)
		f.buf = nil
	}
}

// errWebSeedIdle ends a web seed request that went Config.RequestTimeout
// without a byte: its pieces go back to other sources.
var errWebSeedIdle = errors.New("swarm: web seed: no byte for the request timeout")

// fetchSegment requests one range and checks the answer is the expected
// representation before any byte of it is used. A request whose dial,
// whose answer's headers once it has a connection, or any read of its
// body, take Config.RequestTimeout ends with errWebSeedIdle. The time it
// waits for a connection of the client's pool (webWorkers per host,
// shared by every torrent) does not count: that wait is ours, not the
// seed's.
func (t *Torrent) fetchSegment(s *webSeed, seg segment, f *pieceFiller) (err error) {
	ctx, cancel := context.WithCancelCause(t.ctx)
	defer cancel(nil)
	idle := t.client.cfg.RequestTimeout
	timer := time.AfterFunc(idle, func() { cancel(errWebSeedIdle) })
	timer.Stop()
	defer timer.Stop()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		ConnectStart: func(string, string) { timer.Reset(idle) },
		GotConn:      func(httptrace.GotConnInfo) { timer.Reset(idle) },
	})
	defer func() {
		if err != nil && context.Cause(ctx) == errWebSeedIdle {
			err = errWebSeedIdle
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, seg.url, nil)
	if err != nil {
		return &badAnswerError{reason: "bad URL"}
	}
	for k, vs := range s.ws.Header {
		req.Header[k] = append([]string(nil), vs...)
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(seg.off, 10)+"-"+strconv.FormatInt(seg.off+seg.n-1, 10))
	req.Header.Del("If-Range")
	// The bytes of the file itself: a client's Accept-Encoding, passed on
	// with the origin's headers, could bring a compressed range.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := t.client.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	timer.Stop()
	body := idleReader{r: resp.Body, timer: timer, idle: idle}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return &badAnswerError{reason: "Content-Encoding " + strconv.Quote(ce) + ", not the file's bytes"}
	}
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(strings.ToLower(ct), "application/x-bittorrent") {
		return &badAnswerError{reason: "a metainfo document, not the file"}
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		first, last, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || first != seg.off || last != seg.off+seg.n-1 || (total >= 0 && total != seg.size) {
			return &badAnswerError{reason: "Content-Range " + strconv.Quote(resp.Header.Get("Content-Range")) + " does not match the request"}
		}
	case http.StatusOK:
		// The whole file, though a range was asked for: skip to the range.
		if resp.ContentLength >= 0 && resp.ContentLength != seg.size {
			return &badAnswerError{reason: "length " + strconv.FormatInt(resp.ContentLength, 10) + " is not the file's"}
		}
		if _, err := io.CopyN(io.Discard, body, seg.off); err != nil {
			return fmt.Errorf("swarm: web seed: skipping to the range: %w", err)
		}
	default:
		return fmt.Errorf("swarm: web seed answered %s", resp.Status)
	}
	return f.readFrom(body, seg.n)
}

// idleReader arms an idle timer for each read of r, and only then: the
// time spent storing and handing on what was read does not count.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
	idle  time.Duration
}

func (ir idleReader) Read(b []byte) (int, error) {
	ir.timer.Reset(ir.idle)
	defer ir.timer.Stop()
	return ir.r.Read(b)
}

// maxContentRange bounds the Content-Range a web seed may send: the unit,
// three 19-digit numbers and their separators, with room to spare.
const maxContentRange = 80

// parseContentRange reads a web seed's Content-Range, "bytes first-last/total"
// (RFC 9110, section 14.4), strictly: the unit in any case, the numbers
// plain ASCII digits that fit an int64, first <= last, and last < total;
// total is -1 for "*". It accepts what negotiate.ParseContentRange accepts
// for a satisfied range (a fuzz test holds them together): swarm may not
// import negotiate.
func parseContentRange(v string) (first, last, total int64, ok bool) {
	if len(v) > maxContentRange {
		return 0, 0, 0, false
	}
	unit, rest, found := strings.Cut(v, " ")
	if !found || !strings.EqualFold(unit, "bytes") {
		return 0, 0, 0, false
	}
	span, size, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(span, "-")
	if !found {
		return 0, 0, 0, false
	}
	first, ok1 := parseDigits(a)
	last, ok2 := parseDigits(b)
	if !ok1 || !ok2 || last < first || last == math.MaxInt64 {
		return 0, 0, 0, false
	}
	if size == "*" {
		return first, last, -1, true
	}
	total, ok = parseDigits(size)
	if !ok || total <= last {
		return 0, 0, 0, false
	}
	return first, last, total, true
}

// parseDigits reads a non-empty run of ASCII digits that fits an int64:
// no sign, no space, as the header's grammar has it.
func parseDigits(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// redactURL keeps credentials and query strings out of logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	u.RawQuery = ""
	return u.String()
}
