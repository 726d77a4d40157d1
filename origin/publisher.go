package origin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// retryFailed is how long a version whose hash failed is served plainly
// before a request may try to hash it again.
const retryFailed = 30 * time.Second

// minPieceLength keeps published pieces at 256 KiB or more: several
// clients lose much of their speed on smaller pieces (DESIGN.md §7).
const minPieceLength = 256 << 10

// buildFunc is metainfo.Build's signature; tests swap it to count hashes.
type buildFunc func(ctx context.Context, path string, opts metainfo.BuildOptions) (*metainfo.MetaInfo, error)

// Publisher answers the BitTorrent negotiation for published files, hashes
// them on its workers, persists their metainfo and tells a Seeder what to
// seed. Create it with NewPublisher, wrap a handler with Handler, and Close
// it when done. Its methods are safe for concurrent use.
type Publisher struct {
	cfg      settings
	resolver Resolver
	build    buildFunc

	ctx    context.Context    // cancelled by Close: stops workers and builds
	cancel context.CancelFunc // cancels ctx
	queue  chan *entry        // hash jobs; senders never block
	wake   chan struct{}      // capacity 1: ops are waiting for the maintainer
	wg     sync.WaitGroup     // the workers and the maintainer

	mu      sync.Mutex
	entries map[string]*entry          // the current version of each Resource.Key
	seeds   map[metainfo.Hash]*seeding // ready versions by info-hash
	ops     []op                       // seeding and record work, run in order by the maintainer
	closed  bool                       // set by Close; no new jobs
}

// entryState is where an entry is in its life. Only Publisher.mu holders
// change it.
type entryState int32

const (
	stateHashing entryState = iota // queued or hashing; done not yet closed
	stateReady                     // mi is set; the metainfo is served
	stateFailed                    // hashing failed; retried after retryAt
	stateDropped                   // no longer current; never served again
)

// entry is one version of one resource.
type entry struct {
	res     Resource           // identity; immutable
	ctx     context.Context    // bounds its hashing; cancelled when dropped
	cancel  context.CancelFunc // cancels ctx
	done    chan struct{}      // closed when hashing ended, either way
	mi      *metainfo.MetaInfo // the template (no url-list); set before state becomes ready
	ready   time.Time          // when it became ready; set with mi
	retryAt time.Time          // for a failed entry: when to hash again; guarded by Publisher.mu
	state   atomic.Int32       // an entryState; stored under Publisher.mu

	rendered atomic.Pointer[rendered] // the last metainfo body served, by URL
}

func (e *entry) is(s entryState) bool { return entryState(e.state.Load()) == s }

// rendered is a metainfo body for one url-list.
type rendered struct {
	url       string
	body      []byte
	etag      string
	length    string
	plainType string // with Config.PlainIsFile, the file's type as http.FileServer gives it
}

// seeding holds the ready versions that share an info-hash: the same bytes
// under the same name at two URLs. The first one is the one seeded.
type seeding struct {
	entries []*entry
}

type opKind int

const (
	opSeed   opKind = iota // Seeder.Seed(e)
	opUnseed               // Seeder.Unseed(ih)
	opForget               // delete e's record from the data directory
)

type op struct {
	kind opKind
	e    *entry
	ih   metainfo.Hash
}

// NewPublisher starts a publisher: its hashing workers and the goroutine
// that calls the Seeder. It seeds nothing yet; call Load to seed what the
// data directory holds from before a restart.
func NewPublisher(cfg Config) (*Publisher, error) {
	s, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	res := s.Resolver
	if res == nil {
		if s.Dir == "" {
			return nil, errors.New("origin: config needs a dir or a resolver")
		}
		if res, err = NewDirResolver(s.Dir); err != nil {
			return nil, err
		}
	}
	if s.DataDir != "" {
		if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("origin: data dir: %w", err)
		}
	}
	p := &Publisher{
		cfg:      s,
		resolver: res,
		build:    cfg.build,
		queue:    make(chan *entry, maxQueue),
		wake:     make(chan struct{}, 1),
		entries:  make(map[string]*entry),
		seeds:    make(map[metainfo.Hash]*seeding),
	}
	if p.build == nil {
		p.build = metainfo.Build
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for range s.Workers {
		p.wg.Go(p.worker)
	}
	p.wg.Go(p.maintain)
	return p, nil
}

// Close stops the hashing workers and the seeding goroutine and returns
// once they have ended. It does not unseed: the wiring closes its engine.
// Requests served after Close are passed to the wrapped handler.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	return nil
}

// Torrents lists the torrents that are ready, by key.
func (p *Publisher) Torrents() []Published {
	p.mu.Lock()
	out := make([]Published, 0, len(p.entries))
	for _, e := range p.entries {
		if e.is(stateReady) {
			out = append(out, Published{
				Resource:    e.res,
				InfoHash:    e.mi.InfoHash,
				PieceLength: e.mi.Info.PieceLength,
				Pieces:      e.mi.Info.NumPieces(),
				Ready:       e.ready,
			})
		}
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Published) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Load reads the metainfo persisted in the data directory, keeps the
// versions the Resolver still finds current, makes them ready and seeds
// them. Records of stale versions are deleted. It returns how many torrents
// it loaded; an unreadable record is logged, deleted and skipped.
func (p *Publisher) Load() (int, error) {
	if p.cfg.DataDir == "" {
		return 0, nil
	}
	des, err := os.ReadDir(p.cfg.DataDir)
	if err != nil {
		return 0, fmt.Errorf("origin: load: %w", err)
	}
	n := 0
	for _, de := range des {
		name := de.Name()
		if !isRecordName(name) || !de.Type().IsRegular() {
			continue
		}
		file := p.cfg.DataDir + string(os.PathSeparator) + name
		res, mi, err := readRecord(file)
		if err == nil && recordName(res) != name {
			err = errors.New("origin: record name does not match its content")
		}
		if err != nil {
			p.cfg.Logger.Warn("dropping unreadable metainfo record", "file", name, "err", err)
			removeRecord(file)
			continue
		}
		if !p.resolver.Check(res) {
			p.cfg.Logger.Info("dropping metainfo of a changed file", "key", res.Key)
			removeRecord(file)
			continue
		}
		e := p.newEntry(res)
		e.mi, e.ready = p.template(mi, res), p.cfg.Now()
		close(e.done)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return n, ErrClosed
		}
		if _, dup := p.entries[res.Key]; dup {
			p.mu.Unlock()
			continue
		}
		p.entries[res.Key] = e
		e.state.Store(int32(stateReady))
		p.addSeedLocked(e)
		p.mu.Unlock()
		p.signal()
		n++
	}
	return n, nil
}

// Invalidate re-checks every version seeded as ih, drops those that
// changed or vanished, and seeds ih again from a fresh storage if a current
// version remains. A FileStorage's change callback calls it. It does not
// block on the Seeder.
func (p *Publisher) Invalidate(ih metainfo.Hash) {
	p.mu.Lock()
	var cand []*entry
	if s := p.seeds[ih]; s != nil {
		cand = slices.Clone(s.entries)
	}
	p.mu.Unlock()
	if cand == nil {
		return
	}
	stale := make([]bool, len(cand))
	for i, e := range cand {
		stale[i] = !p.resolver.Check(e.res)
	}
	p.mu.Lock()
	for i, e := range cand {
		if stale[i] && e.is(stateReady) {
			p.cfg.Logger.Info("published file changed; dropping its torrent", "key", e.res.Key, "infohash", ih)
			p.dropLocked(e)
		}
	}
	if s := p.seeds[ih]; s != nil && s.entries[0] == cand[0] {
		// The seeded version is current, yet its storage saw a change and
		// now refuses to serve: seed it again from a fresh storage. (When
		// the seeded version was dropped, removeSeedLocked already moved
		// the seed to the next one.)
		p.ops = append(p.ops, op{kind: opUnseed, ih: ih}, op{kind: opSeed, e: s.entries[0]})
	}
	p.mu.Unlock()
	p.signal()
}

// await returns the ready entry for res, starting its hash if needed and
// waiting up to Config.Wait for it, or nil.
func (p *Publisher) await(ctx context.Context, res Resource) *entry {
	e := p.lookup(res)
	if e == nil {
		return nil
	}
	if e.is(stateReady) {
		return e
	}
	if p.cfg.wait <= 0 {
		return nil
	}
	t := time.NewTimer(p.cfg.wait)
	defer t.Stop()
	select {
	case <-e.done:
	case <-t.C:
		return nil
	case <-ctx.Done():
		return nil
	case <-p.ctx.Done():
		return nil
	}
	if e.is(stateReady) {
		return e
	}
	return nil
}

// lookup finds the entry for res's version. A different version of the
// same key is stale: it is dropped and unseeded, and res is queued for
// hashing. nil means there is nothing to wait for (closed, queue full, or a
// recent failure).
func (p *Publisher) lookup(res Resource) *entry {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	e := p.entries[res.Key]
	if e != nil && e.res.Path == res.Path && sameVersion(e.res, res) {
		if !e.is(stateFailed) {
			return e
		}
		if p.cfg.Now().Before(e.retryAt) {
			return nil
		}
	}
	if e != nil {
		if e.is(stateReady) {
			p.cfg.Logger.Info("published file changed; dropping its torrent", "key", res.Key, "infohash", e.mi.InfoHash)
		}
		p.dropLocked(e)
	}
	ne := p.newEntry(res)
	select {
	case p.queue <- ne:
		p.entries[res.Key] = ne
		return ne
	default:
		ne.cancel()
		p.cfg.Logger.Warn("hash queue full; serving plainly", "key", res.Key)
		return nil
	}
}

func (p *Publisher) newEntry(res Resource) *entry {
	e := &entry{res: res, done: make(chan struct{})}
	e.ctx, e.cancel = context.WithCancel(p.ctx)
	return e
}

// dropLocked retires e: it is never served again, its hash stops, and a
// ready e is unseeded and its record forgotten.
func (p *Publisher) dropLocked(e *entry) {
	prev := entryState(e.state.Load())
	e.state.Store(int32(stateDropped))
	e.cancel()
	if p.entries[e.res.Key] == e {
		delete(p.entries, e.res.Key)
	}
	if prev == stateReady {
		p.removeSeedLocked(e)
		p.ops = append(p.ops, op{kind: opForget, e: e})
	}
}

func (p *Publisher) addSeedLocked(e *entry) {
	ih := e.mi.InfoHash
	s := p.seeds[ih]
	if s == nil {
		s = &seeding{}
		p.seeds[ih] = s
		p.ops = append(p.ops, op{kind: opSeed, e: e})
	}
	s.entries = append(s.entries, e)
}

func (p *Publisher) removeSeedLocked(e *entry) {
	ih := e.mi.InfoHash
	s := p.seeds[ih]
	if s == nil {
		return
	}
	i := slices.Index(s.entries, e)
	if i < 0 {
		return
	}
	s.entries = slices.Delete(s.entries, i, i+1)
	if i != 0 {
		return // another version is the one seeded
	}
	p.ops = append(p.ops, op{kind: opUnseed, ih: ih})
	if len(s.entries) == 0 {
		delete(p.seeds, ih)
		return
	}
	p.ops = append(p.ops, op{kind: opSeed, e: s.entries[0]})
}

// signal wakes the maintainer.
func (p *Publisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// worker hashes queued versions until Close.
func (p *Publisher) worker() {
	for {
		select {
		case <-p.ctx.Done():
			return
		case e := <-p.queue:
			p.hash(e)
		}
	}
}

// hash makes e ready: from its record when the data directory has one,
// otherwise by building its metainfo.
func (p *Publisher) hash(e *entry) {
	var (
		mi  *metainfo.MetaInfo
		err error
	)
	if e.ctx.Err() == nil {
		mi, err = p.prepare(e)
	} else {
		err = e.ctx.Err()
	}
	p.mu.Lock()
	current := p.entries[e.res.Key] == e && e.is(stateHashing)
	switch {
	case current && err == nil:
		e.mi, e.ready = mi, p.cfg.Now()
		e.state.Store(int32(stateReady))
		p.addSeedLocked(e)
		p.cfg.Logger.Info("published", "key", e.res.Key, "infohash", mi.InfoHash, "size", e.res.Size)
	case current:
		e.retryAt = p.cfg.Now().Add(retryFailed)
		e.state.Store(int32(stateFailed))
		p.cfg.Logger.Warn("cannot publish", "key", e.res.Key, "err", err)
	case err == nil:
		// Dropped while hashing: its record was written for nothing.
		p.ops = append(p.ops, op{kind: opForget, e: e})
	}
	p.mu.Unlock()
	p.signal()
	close(e.done)
}

// prepare returns the template metainfo for e's version.
func (p *Publisher) prepare(e *entry) (*metainfo.MetaInfo, error) {
	file := p.recordPath(e.res)
	if file != "" {
		if res, mi, err := readRecord(file); err == nil && res.Key == e.res.Key && res.Path == e.res.Path && sameVersion(res, e.res) {
			return p.template(mi, e.res), nil
		}
	}
	if err := unchanged(e.res); err != nil {
		return nil, err
	}
	mi, err := p.build(e.ctx, e.res.Path, metainfo.BuildOptions{
		Name:        path.Base(e.res.Key),
		PieceLength: max(metainfo.AutoPieceLength(e.res.Size), minPieceLength),
		Workers:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("origin: hashing %s: %w", e.res.Key, err)
	}
	// Bytes that changed during the build may be in the hashes: discard.
	if err := unchanged(e.res); err != nil {
		return nil, err
	}
	if mi.Info.MultiFile || mi.Info.TotalLength != e.res.Size {
		return nil, fmt.Errorf("origin: hashing %s: %w", e.res.Key, ErrChanged)
	}
	mi = p.template(mi, e.res)
	if file != "" {
		if err := writeRecord(file, e.res, mi); err != nil {
			p.cfg.Logger.Warn("cannot persist metainfo", "key", e.res.Key, "err", err)
		}
	}
	return mi, nil
}

// template gives mi the publisher's top-level fields: everything but the
// url-list, which each request supplies.
func (p *Publisher) template(mi *metainfo.MetaInfo, res Resource) *metainfo.MetaInfo {
	return &metainfo.MetaInfo{
		InfoBytes:    mi.InfoBytes,
		InfoHash:     mi.InfoHash,
		Info:         mi.Info,
		Announce:     p.cfg.Announce,
		CreatedBy:    CreatedBy,
		CreationDate: res.ModTime,
	}
}

// unchanged checks that the file of res is still the version res names.
func unchanged(res Resource) error {
	st, err := os.Stat(res.Path)
	if err != nil {
		return fmt.Errorf("origin: %s: %w", res.Key, err)
	}
	if !isVersion(st, res) {
		return fmt.Errorf("origin: %s: %w", res.Key, ErrChanged)
	}
	return nil
}

// maintain runs ops in order until Close: Seeder calls and record
// deletions, kept off the request path and out of the lock.
func (p *Publisher) maintain() {
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.wake:
		}
		p.mu.Lock()
		ops := p.ops
		p.ops = nil
		p.mu.Unlock()
		for _, o := range ops {
			if p.ctx.Err() != nil {
				return
			}
			p.run(o)
		}
	}
}

func (p *Publisher) run(o op) {
	switch o.kind {
	case opSeed:
		if p.cfg.Seeder == nil {
			return
		}
		if err := p.cfg.Seeder.Seed(o.e.mi, []Resource{o.e.res}); err != nil {
			p.cfg.Logger.Warn("cannot seed", "key", o.e.res.Key, "infohash", o.e.mi.InfoHash, "err", err)
			if errors.Is(err, ErrChanged) {
				// The file changed after its hash: drop that version.
				p.Invalidate(o.e.mi.InfoHash)
			}
		}
	case opUnseed:
		if p.cfg.Seeder != nil {
			p.cfg.Seeder.Unseed(o.ih)
		}
	case opForget:
		if file := p.recordPath(o.e.res); file != "" {
			removeRecord(file)
		}
	}
}
