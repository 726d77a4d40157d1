package proxy

import (
	"cmp"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// The engine counts bytes per torrent, and a torrent's counts go when it
// closes (evicted, dropped, done seeding). The proxy's totals must only
// grow, so it keeps its own: it tracks every torrent it has streamed or the
// cache holds, and adds each one's increase since it last looked.

// counters are the proxy's cumulative totals, fed from torrent stats.
type counters struct {
	fromPeers    int64 // payload bytes accepted from peers
	fromOrigin   int64 // payload bytes accepted from the origin and other web seeds
	uploaded     int64 // payload bytes sent to peers
	hashFailures int64 // pieces that failed their hash
}

// torrentMark is what one tracked torrent had reported when last looked at.
type torrentMark struct{ down, web, up, hashFail int64 }

// maxTracked bounds the torrents whose counts feed the totals.
const maxTracked = 4096

const (
	// historyEvery is the spacing of the totals' samples, and historyLen
	// how many are kept: one hour.
	historyEvery = 10 * time.Second
	historyLen   = 360
	// accountEvery is how often the sampler folds torrent counts into the
	// totals, so that a torrent closing loses little that is not counted.
	accountEvery = 2 * time.Second
)

// sample is the totals at one moment.
type sample struct {
	at                    time.Time
	fromPeers, fromOrigin int64
}

// snapshot is one consistent look at the proxy, for a page, /status.json
// or a scrape.
type snapshot struct {
	at        time.Time
	totals    totals
	counters  counters
	transfers []*transfer // active, by ID
	stats     map[*swarm.Torrent]swarm.Stats
	peers     int // connected to every live tracked torrent
	hasCache  bool
	cacheUsed int64
	cacheMax  int64
	cached    []cachedTorrent
}

// cachedTorrent is a cache entry and the engine's torrent for it, if any.
type cachedTorrent struct {
	CachedTorrent
	torrent *swarm.Torrent // nil when the engine does not run it
}

// snapshot reads the transfers, the cache and every tracked torrent's
// stats, and brings the totals up to date.
func (p *Proxy) snapshot() snapshot {
	s := snapshot{at: time.Now(), stats: map[*swarm.Torrent]swarm.Stats{}}
	p.mu.Lock()
	s.totals = p.totals
	for _, tr := range p.transfers {
		s.transfers = append(s.transfers, tr)
	}
	p.mu.Unlock()
	slices.SortFunc(s.transfers, func(a, b *transfer) int { return cmp.Compare(a.ID, b.ID) })

	seen := make([]*swarm.Torrent, 0, len(s.transfers))
	for _, tr := range s.transfers {
		seen = append(seen, tr.torrent)
	}
	if c := p.cfg.Cache; c != nil {
		s.hasCache = true
		s.cacheUsed, s.cacheMax = c.Usage()
		for _, ct := range c.Torrents() {
			t, ok := p.cfg.Engine.Torrent(ct.InfoHash)
			if !ok {
				t = nil
			} else {
				seen = append(seen, t)
			}
			s.cached = append(s.cached, cachedTorrent{ct, t})
		}
	}

	// Stats are commands to each torrent's run loop: read them with no
	// lock held, then fold them in under the lock. Folding takes only
	// increases, so two snapshots at once never count a byte twice.
	for _, t := range seen {
		p.track(t)
	}
	u := &p.ui
	u.mu.Lock()
	read := make([]*swarm.Torrent, 0, len(u.tracked)+len(seen))
	for t := range u.tracked {
		read = append(read, t)
	}
	u.mu.Unlock()
	read = append(read, seen...)
	closed := map[*swarm.Torrent]bool{}
	for _, t := range read {
		if _, ok := s.stats[t]; ok {
			continue
		}
		// Closed before the read: its counts are final, so this is its
		// last look.
		closed[t] = isDone(t.Done())
		s.stats[t] = t.Stats()
	}

	u.mu.Lock()
	defer u.mu.Unlock()
	for t, st := range s.stats {
		m, ok := u.tracked[t]
		if !ok {
			continue
		}
		grow(&u.counters.fromPeers, &m.down, st.Downloaded)
		grow(&u.counters.fromOrigin, &m.web, st.FromWebSeeds)
		grow(&u.counters.uploaded, &m.up, st.Uploaded)
		grow(&u.counters.hashFailures, &m.hashFail, int64(st.HashFailures))
		if closed[t] {
			delete(u.tracked, t)
		} else {
			s.peers += len(st.Peers)
		}
	}
	s.counters = u.counters
	return s
}

// track makes t's counts feed the totals from now until it closes.
func (p *Proxy) track(t *swarm.Torrent) {
	u := &p.ui
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.tracked == nil {
		u.tracked = map[*swarm.Torrent]*torrentMark{}
	}
	if _, ok := u.tracked[t]; !ok && !isDone(t.Done()) && len(u.tracked) < maxTracked {
		u.tracked[t] = &torrentMark{}
	}
}

// trackingStore tells the totals of each torrent a response starts to
// stream (serve pins it first): a short transfer can begin and end
// between two samples.
type trackingStore struct {
	Store
	p *Proxy
}

func (s trackingStore) Pin(ih metainfo.Hash) func() {
	if t, ok := s.p.cfg.Engine.Torrent(ih); ok {
		s.p.track(t)
	}
	return s.Store.Pin(ih)
}

// grow adds to *total how far cur went past *last. A closed torrent
// reports some counts as zero; those are ignored, never subtracted.
func grow(total, last *int64, cur int64) {
	if cur > *last {
		*total += cur - *last
		*last = cur
	}
}

// startSampler starts the goroutine that keeps the totals and their
// history; stopSampler stops it and waits. Close calls stopSampler, and
// after that startSampler does nothing.
func (p *Proxy) startSampler() {
	u := &p.ui
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.running || u.closed {
		return
	}
	u.running = true
	u.wg.Go(p.sample)
}

func (p *Proxy) stopSampler() {
	u := &p.ui
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
	u.wg.Wait() // the sampler ends on p.base, which Close cancelled
}

// sample folds torrent counts into the totals every accountEvery and
// records them every historyEvery, until Close.
func (p *Proxy) sample() {
	tick := time.NewTicker(accountEvery)
	defer tick.Stop()
	var last time.Time
	for {
		s := p.snapshot()
		if s.at.Sub(last) >= historyEvery-accountEvery/2 {
			last = s.at
			p.record(sample{at: s.at, fromPeers: s.counters.fromPeers, fromOrigin: s.counters.fromOrigin})
		}
		select {
		case <-p.base.Done():
			return
		case <-tick.C:
		}
	}
}

// record adds a sample to the history ring.
func (p *Proxy) record(s sample) {
	u := &p.ui
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.history) < historyLen {
		u.history = append(u.history, s)
		return
	}
	u.history[u.next] = s
	u.next = (u.next + 1) % historyLen
}

// history returns the samples, oldest first.
func (p *Proxy) history() []sample {
	u := &p.ui
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]sample, 0, len(u.history))
	out = append(out, u.history[u.next:]...)
	return append(out, u.history[:u.next]...)
}

// metricsHandler serves /metrics from a registry of this Proxy's own: two
// proxies in one process (tests) never share metric state.
func (p *Proxy) metricsHandler() http.Handler {
	p.ui.metricsOnce.Do(func() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(newCollector(p))
		p.ui.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	})
	return p.ui.metrics
}

// collector turns a snapshot into metrics at each scrape, so the values
// are the ones the status page shows.
type collector struct {
	p                                   *Proxy
	requests, bytes, uploaded, hashFail *prometheus.Desc
	transfers, peers                    *prometheus.Desc
	cacheBytes, cacheLimit, cacheCount  *prometheus.Desc
}

func newCollector(p *Proxy) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tbproxy_"+name, help, labels, nil)
	}
	return &collector{
		p:          p,
		requests:   d("requests_total", "Proxied GET requests by outcome: transformed (served from BitTorrent), passed_through, fallback (refetched plainly).", "outcome"),
		bytes:      d("bytes_total", "Payload bytes by source: peers and origin (web seeds) feed the swarm; served went to clients from torrents.", "source"),
		uploaded:   d("uploaded_bytes_total", "Payload bytes uploaded to peers."),
		hashFail:   d("hash_failures_total", "Pieces that failed their SHA-1 check."),
		transfers:  d("transfers", "Responses being served from torrents now."),
		peers:      d("peers", "Peers connected, summed over the active torrents."),
		cacheBytes: d("cache_bytes", "Bytes the disk cache holds."),
		cacheLimit: d("cache_limit_bytes", "The bound on the disk cache's bytes."),
		cacheCount: d("cache_torrents", "Torrents in the disk cache."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.requests, c.bytes, c.uploaded, c.hashFail, c.transfers, c.peers, c.cacheBytes, c.cacheLimit, c.cacheCount} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.snapshot()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter(c.requests, s.totals.transformed, "transformed")
	counter(c.requests, s.totals.passed, "passed_through")
	counter(c.requests, s.totals.fallbacks, "fallback")
	counter(c.bytes, s.counters.fromPeers, "peers")
	counter(c.bytes, s.counters.fromOrigin, "origin")
	counter(c.bytes, s.served(), "served")
	counter(c.uploaded, s.counters.uploaded)
	counter(c.hashFail, s.counters.hashFailures)
	gauge(c.transfers, int64(len(s.transfers)))
	gauge(c.peers, int64(s.peers))
	if s.hasCache {
		gauge(c.cacheBytes, s.cacheUsed)
		gauge(c.cacheLimit, s.cacheMax)
		gauge(c.cacheCount, int64(len(s.cached)))
	}
}

// served is the body bytes sent from torrents: finished responses and
// those in flight.
func (s *snapshot) served() int64 {
	n := s.totals.served
	for _, tr := range s.transfers {
		n += tr.sent.Load()
	}
	return n
}
