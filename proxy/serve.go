package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
	"github.com/tbproxy/tbproxy/swarm"
)

// errTruncated aborts a response whose body could not be completed: the
// client sees a broken connection, never a short body passed off as whole.
var errTruncated = errors.New("proxy: response body could not be completed")

// transfer is one synthesised response in flight, for /status.json.
type transfer struct {
	ID       int64
	App      string // the client's User-Agent
	URL      string
	File     string
	Size     int64
	Started  time.Time
	sent     atomic.Int64
	torrent  *swarm.Torrent
	infohash metainfo.Hash
}

// serve answers orig with file idx of t through http.ServeContent, which
// gives ranges, multi-range, 416, conditional requests and HEAD. The body
// streams through a pipe from a goroutine that ends when the body is done,
// the client goes away, or the proxy closes.
func (p *Proxy) serve(orig *http.Request, t *swarm.Torrent, m *metainfo.MetaInfo, idx int, h http.Header) (*http.Response, error) {
	ctx, cancel := context.WithCancel(orig.Context())
	stopBase := context.AfterFunc(p.base, cancel)
	rd, err := t.NewFileReader(ctx, idx)
	if err != nil {
		stopBase()
		cancel()
		return p.fallback(orig)
	}
	release := p.store.Pin(m.InfoHash)
	pr, pw := io.Pipe()
	w := &pipeWriter{header: h, pw: pw, started: make(chan struct{})}
	f := m.Info.Files[idx]
	tr := &transfer{App: orig.UserAgent(), URL: redact(orig.URL), File: f.DisplayPath(), Size: f.Length, Started: time.Now(), torrent: t, infohash: m.InfoHash}
	w.sent = &tr.sent
	id := p.addTransfer(tr)
	p.wg.Go(func() {
		defer p.removeTransfer(id)
		defer release()
		defer stopBase()
		defer cancel()
		defer rd.Close()
		stopWatch := p.watchProgress(ctx, cancel, &tr.sent)
		defer stopWatch()
		http.ServeContent(w, orig, "", negotiate.ModTime(m), rd)
		w.WriteHeader(http.StatusOK) // in case ServeContent wrote nothing
		w.start()                    // a response with no body starts here
		if w.declared >= 0 && w.written < w.declared {
			pw.CloseWithError(errTruncated)
			return
		}
		pw.Close()
	})
	// Headers go out with the first byte of the body: until then the
	// client can still be answered plainly if the swarm and the origin
	// web seed deliver nothing within the budget.
	timer := time.NewTimer(p.firstByte())
	defer timer.Stop()
	select {
	case <-w.started:
	case <-timer.C:
		cancel()
		pr.Close()
		p.log.Warn("no bytes from the swarm in time; fetching plainly", "url", redact(orig.URL), "after", p.firstByte())
		return p.fallback(orig)
	case <-orig.Context().Done():
		cancel()
		pr.Close()
		return nil, orig.Context().Err()
	}
	resp := &http.Response{
		StatusCode:    w.status,
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.header,
		Body:          pr,
		ContentLength: w.declared,
		Request:       orig,
	}
	if orig.Method == http.MethodHead {
		resp.Body = http.NoBody
		pr.Close()
	}
	return resp, nil
}

// pipeWriter is the http.ResponseWriter ServeContent writes to: it holds
// the status and headers until WriteHeader, then streams the body into a
// pipe.
type pipeWriter struct {
	header   http.Header
	pw       *io.PipeWriter
	started  chan struct{} // closed at the first body byte, or when there is none
	once     sync.Once
	startOne sync.Once
	status   int
	declared int64 // Content-Length, or -1
	written  int64
	sent     *atomic.Int64
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) {
	w.once.Do(func() {
		w.status = code
		w.declared = -1
		if cl := w.header.Get("Content-Length"); cl != "" {
			if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
				w.declared = n
			}
		}
	})
}

// maxNoProgress is how long a stream may send nothing before it is
// aborted: a client that left a MITM tunnel is only noticed on a write.
const maxNoProgress = 2 * time.Minute

// watchProgress cancels a stream that has sent nothing for maxNoProgress.
// The returned func stops the watch and waits for it.
func (p *Proxy) watchProgress(ctx context.Context, cancel context.CancelFunc, sent *atomic.Int64) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(maxNoProgress / 8)
		defer tick.Stop()
		last, since := sent.Load(), time.Now()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				if n := sent.Load(); n != last {
					last, since = n, now
				} else if now.Sub(since) >= maxNoProgress {
					p.log.Warn("stream made no progress; aborting it", "after", maxNoProgress)
					cancel()
					return
				}
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}

// start releases the response to the client.
func (w *pipeWriter) start() { w.startOne.Do(func() { close(w.started) }) }

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.start()
	n, err := w.pw.Write(b)
	w.written += int64(n)
	w.sent.Add(int64(n))
	return n, err
}

func (p *Proxy) addTransfer(tr *transfer) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	tr.ID = p.nextID
	p.transfers[tr.ID] = tr
	return tr.ID
}

func (p *Proxy) removeTransfer(id int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if tr := p.transfers[id]; tr != nil {
		p.totals.served += tr.sent.Load()
	}
	delete(p.transfers, id)
}

// DefaultFirstByte is how long a transformed response may wait for its
// first byte before the client is answered plainly instead.
const DefaultFirstByte = 20 * time.Second

func (p *Proxy) firstByte() time.Duration {
	if p.cfg.FirstByte > 0 {
		return p.cfg.FirstByte
	}
	return DefaultFirstByte
}

// totals count requests by outcome and bytes served.
type totals struct {
	transformed, passed, fallbacks int64
	served                         int64 // body bytes of finished synthesised responses
}

func (p *Proxy) count(f func(*totals)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.totals)
}
