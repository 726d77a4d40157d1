package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
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

// errProxyClosed ends a response that was waiting when the proxy closed.
var errProxyClosed = errors.New("proxy: closed")

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
	url      string // the URL asked for, unredacted
	// abort ends a single span's stream, when set (newSpan).
	abort context.CancelFunc
}

// serve answers orig with file idx of the torrent op opens, as pl, the
// plan for it, says: http.ServeContent decided the answer (ranges, 416,
// conditional requests, HEAD) on a HEAD copy of the request; h are the
// synthesised headers. A single span is then
// streamed straight from a swarm.Reader, which sends verified bytes on
// disk with sendfile. Multi-range answers stream through ServeContent
// itself (servePiped).
//
// c, when not nil, is the origin's confirmation that it serves the file
// (see confirmOrigin), under way; serve stops it before it returns. When
// it comes before the torrent is open, a span's headers go out at once
// and the torrent is waited for by the body (lateSpan): unless an opening
// failed lately, when a response waits for the torrent so that it can
// still fall back.
func (p *Proxy) serve(orig *http.Request, op *opening, m *metainfo.MetaInfo, idx int, h http.Header, pl planned, c *confirmation) (*http.Response, error) {
	detach := false // the headers go out with verified bytes, and c may still run
	defer func() { p.release(c, detach) }()
	span := pl.stream && !pl.multipart && orig.Method != http.MethodHead
	if span && c != nil && !isDone(op.done) && !p.openFailing.Load() {
		select {
		case <-op.done:
		case <-c.ok.Done():
			if !isDone(op.done) {
				p.transformed(orig, m, idx, op.magnet)
				p.log.Debug("headers going out before the torrent is open", "url", redact(orig.URL))
				return pl.response(orig, p.newLateSpan(orig, op, m, idx, pl)), nil
			}
		case <-c.differs.Done():
			if why := context.Cause(c.differs); errors.Is(why, errOriginDiffers) {
				return p.originDiffers(orig, why)
			}
		case <-orig.Context().Done():
		}
	}
	<-op.done
	if err := orig.Context().Err(); err != nil {
		return nil, err
	}
	if op.err != nil {
		p.log.Warn("cannot start the torrent; fetching plainly", "url", redact(orig.URL), "err", op.err)
		return p.fallback(orig)
	}
	p.transformed(orig, m, idx, op.magnet)
	t := op.t
	switch {
	case pl.multipart:
		return p.servePiped(orig, t, m, idx, h)
	case !span:
		return pl.response(orig, nil), nil
	}
	b, err := p.newSpan(orig, t, m, idx, pl)
	if err != nil {
		return p.fallback(orig)
	}
	first, err := p.awaitFirst(b.ctx, b, c)
	if err != nil {
		b.Close()
		switch {
		case orig.Context().Err() != nil:
			return nil, orig.Context().Err()
		case p.base.Err() != nil:
			return nil, errProxyClosed
		case errors.Is(err, errOriginDiffers):
			return p.originDiffers(orig, err)
		case errors.Is(err, errNoSource):
			p.log.Info("nothing but the origin could deliver the torrent's file, and it refuses it; fetching plainly", "url", redact(orig.URL))
		case errors.Is(err, context.DeadlineExceeded):
			p.log.Warn("no bytes from the swarm in time; fetching plainly", "url", redact(orig.URL), "after", p.firstByte())
		default:
			p.log.Warn("the swarm failed before the first byte; fetching plainly", "url", redact(orig.URL), "err", err)
		}
		return p.fallback(orig)
	}
	b.first = first
	detach = len(first) > 0
	p.log.Debug("headers going out", "url", redact(orig.URL), "first bytes", len(first))
	var firstBy time.Duration // a stream that has nothing to send yet gets the first-byte budget
	if len(first) == 0 {
		firstBy = p.firstByte()
	}
	b.watch(p, firstBy)
	return pl.response(orig, b), nil
}

// newSpan opens a reader of the planned span of file idx of t, and
// registers the transfer. Closing the body releases both.
func (p *Proxy) newSpan(orig *http.Request, t *swarm.Torrent, m *metainfo.MetaInfo, idx int, pl planned) (*spanBody, error) {
	if err := p.convicted(orig.URL.String(), m.InfoHash); err != nil {
		return nil, err // convicted while the torrent opened
	}
	ctx, cancel := context.WithCancel(orig.Context())
	stopBase := context.AfterFunc(p.base, cancel)
	rd, err := t.NewRangeReader(ctx, idx, pl.start, pl.length)
	if err != nil {
		stopBase()
		cancel()
		return nil, err
	}
	release := p.store.Pin(m.InfoHash)
	tr := newTransfer(orig, t, m, idx)
	tr.abort = cancel
	id := p.addTransfer(tr)
	b := &spanBody{rd: rd, t: t, ctx: ctx, cancel: cancel, left: pl.length, sent: &tr.sent}
	b.stop = func() {
		rd.Close()
		cancel()
		stopBase()
		release()
		p.removeTransfer(id)
	}
	return b, nil
}

// watch aborts the span when it stops making progress (watchProgress),
// until it is closed.
func (b *spanBody) watch(p *Proxy, first time.Duration) {
	stopWatch := p.watchProgress(b.ctx, b.cancel, b.sent, first)
	inner := b.stop
	b.stop = func() {
		stopWatch()
		inner()
	}
}

// planned is the answer http.ServeContent gives to a request, learned by
// asking it about a HEAD copy of the request: no body is read.
type planned struct {
	status        int
	header        http.Header
	text          []byte // a short body ServeContent wrote itself (a 416's)
	stream        bool   // the answer's body is the span below
	multipart     bool   // a multi-range answer: ServeContent must write it
	start, length int64
}

// plan learns how http.ServeContent answers orig for a file of size bytes
// with headers h, last modified at mod. h itself is left as it was, but
// for a Content-Type it lacked.
func plan(orig *http.Request, h http.Header, size int64, mod time.Time) planned {
	head := asServed(orig, size)
	head.Method = http.MethodHead
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/octet-stream") // ServeContent would sniff the body
	}
	w := &captureWriter{header: h.Clone()}
	http.ServeContent(w, head, "", mod, sizeOnly(size))
	if w.status == 0 {
		w.status = http.StatusOK
	}
	pl := planned{status: w.status, header: w.header, text: w.text}
	switch w.status {
	case http.StatusOK:
		pl.stream, pl.length = size > 0, size
	case http.StatusPartialContent:
		if strings.HasPrefix(w.header.Get("Content-Type"), "multipart/") {
			pl.multipart = true
			break
		}
		start, end, total, err := negotiate.ParseContentRange(w.header.Get("Content-Range"))
		if err != nil || total != size || w.header.Get("Content-Length") != strconv.FormatInt(end-start, 10) {
			pl.multipart = true // not a span we know: let ServeContent write it
			break
		}
		pl.stream, pl.start, pl.length = true, start, end-start
	}
	return pl
}

// asServed is a copy of orig for http.ServeContent to answer, for a file
// of size bytes, with its Range as negotiate.ServeRange leaves it.
func asServed(orig *http.Request, size int64) *http.Request {
	r := orig.Clone(orig.Context())
	negotiate.ServeRange(r.Header, size)
	return r
}

// response is the planned answer with body b, or with the planned text.
func (pl planned) response(orig *http.Request, b io.ReadCloser) *http.Response {
	resp := newResponse(orig, pl.status, pl.header, http.NoBody, -1)
	if cl, err := strconv.ParseInt(pl.header.Get("Content-Length"), 10, 64); err == nil && cl >= 0 {
		resp.ContentLength = cl
	}
	switch {
	case b != nil:
		resp.Body = b
	case orig.Method != http.MethodHead && len(pl.text) > 0:
		resp.Body = io.NopCloser(bytes.NewReader(pl.text))
	}
	return resp
}

// captureWriter is the http.ResponseWriter plan hands ServeContent.
type captureWriter struct {
	header http.Header
	status int
	text   []byte
}

func (w *captureWriter) Header() http.Header { return w.header }

func (w *captureWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *captureWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if len(w.text)+len(b) > maxPlannedText {
		return 0, errors.New("proxy: planned body too long")
	}
	w.text = append(w.text, b...)
	return len(b), nil
}

// maxPlannedText bounds the text ServeContent may write while planning.
const maxPlannedText = 4 << 10

// sizeOnly is a ReadSeeker of a given size that is never read: planning
// is a HEAD request, so ServeContent only seeks.
type sizeOnly int64

func (s sizeOnly) Read([]byte) (int, error) { return 0, errors.New("proxy: planning reads no body") }

func (s sizeOnly) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		return off, nil
	case io.SeekEnd:
		return int64(s) + off, nil
	}
	return 0, errors.New("proxy: unsupported seek")
}

// spanBody is a synthesised response's body: one span of a file, read
// from a swarm.Reader. Its WriteTo hands the Reader the client's
// connection, so bytes on disk go out with sendfile. Close releases the
// reader, the pin and the transfer.
type spanBody struct {
	rd     *swarm.Reader
	t      *swarm.Torrent
	ctx    context.Context // the reader's own: the response's
	cancel context.CancelFunc
	first  []byte // read before the response went out
	left   int64  // bytes of the span not yet sent
	sent   *atomic.Int64
	stop   func()
	once   sync.Once
}

// awaitFirst waits until the response's headers may go out: until the
// span's first bytes are verified, which it returns, or until the origin
// has confirmed that it serves the torrent's file (confirmOrigin), when
// it returns no bytes and no error. An origin that shows another file
// first makes it return an error wrapping errOriginDiffers. Until then
// the client can still be answered plainly, if the swarm and the origin
// web seed deliver nothing within the first-byte budget
// (context.DeadlineExceeded).
func (p *Proxy) awaitFirst(ctx context.Context, b *spanBody, c *confirmation) ([]byte, error) {
	// Bytes already at hand (a warm cache) go out at once.
	now, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if first, err := b.readFirst(now); err == nil {
		return first, nil
	}
	fctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	if c != nil {
		defer context.AfterFunc(c.ok, func() { stop(errOriginConfirmed) })()
		defer context.AfterFunc(c.differs, func() { stop(context.Cause(c.differs)) })()
		defer context.AfterFunc(c.refused, func() {
			if b.t.Sourceless() {
				stop(errNoSource)
			}
		})()
	}
	fctx, cancel := context.WithTimeout(fctx, p.firstByte())
	defer cancel()
	first, err := b.readFirst(fctx)
	if err != nil && ctx.Err() == nil {
		switch cause := context.Cause(fctx); {
		case errors.Is(cause, errOriginConfirmed):
			return nil, nil
		case errors.Is(cause, errOriginDiffers), errors.Is(cause, errNoSource):
			return nil, cause
		}
	}
	return first, err
}

// errNoSource ends the wait for a response's first verified bytes early:
// the origin refused the file (its confirmation's status), and the
// torrent has no other source (swarm.Torrent.Sourceless). A plain answer
// is all there is, and waiting out the first-byte budget would only
// delay it.
var errNoSource = errors.New("proxy: no source but the origin, which refuses the file")

// originDiffers answers orig plainly, its torrent being stale: the origin
// has shown another file than the torrent describes (why) before the
// response's headers went out.
func (p *Proxy) originDiffers(orig *http.Request, why error) (*http.Response, error) {
	p.log.Warn("the origin serves another file than its torrent; fetching plainly", "url", redact(orig.URL), "why", why)
	return p.fallback(orig)
}

// readFirst reads the span's first bytes while ctx lasts.
func (b *spanBody) readFirst(ctx context.Context) ([]byte, error) {
	b.rd.SetContext(ctx)
	defer b.rd.SetContext(b.ctx)
	buf := make([]byte, min(b.left, firstRead))
	n, err := b.rd.Read(buf)
	if n > 0 {
		b.left -= int64(n)
		return buf[:n], nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}

// firstRead is the most read before the headers go out.
const firstRead = 16 << 10

func (b *spanBody) Read(p []byte) (int, error) {
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		b.sent.Add(int64(n))
		return n, nil
	}
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rd.Read(p)
	b.left -= int64(n)
	b.sent.Add(int64(n))
	if err == io.EOF && b.left > 0 {
		err = errTruncated
	}
	return n, err
}

// WriteTo sends the rest of the span to w: goproxy's io.Copy calls it
// with the client's ResponseWriter.
func (b *spanBody) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(b.first) == 0 && b.left > 0 {
		// The headers went out before the first bytes were at hand (see
		// awaitFirst): send them now, not with the first bytes.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	if len(b.first) > 0 {
		n, err := w.Write(b.first)
		total += int64(n)
		b.sent.Add(int64(n))
		b.first = b.first[n:]
		if err != nil {
			return total, err
		}
	}
	if b.left <= 0 {
		return total, nil
	}
	n, err := b.rd.WriteTo(countingWriter(w, b.sent))
	total += n
	b.left -= n
	if err == nil && b.left > 0 {
		err = errTruncated
	}
	return total, err
}

// countingWriter counts what is written to w in *sent, and keeps w's
// ReadFrom (a socket's sendfile) when it has one.
func countingWriter(w io.Writer, sent *atomic.Int64) io.Writer {
	c := counter{w: w, sent: sent}
	if rf, ok := w.(io.ReaderFrom); ok {
		return readFromCounter{c, rf}
	}
	return c
}

type counter struct {
	w    io.Writer
	sent *atomic.Int64
}

func (c counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.sent.Add(int64(n))
	return n, err
}

type readFromCounter struct {
	counter
	rf io.ReaderFrom
}

func (c readFromCounter) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.rf.ReadFrom(r)
	c.sent.Add(n)
	return n, err
}

func (b *spanBody) Close() error {
	b.once.Do(b.stop)
	return nil
}

// servePiped answers orig with file idx of t through http.ServeContent: the
// multi-range answers that serve leaves to it. The body
// streams through a pipe from a goroutine that ends when the body is done,
// the client goes away, or the proxy closes.
func (p *Proxy) servePiped(orig *http.Request, t *swarm.Torrent, m *metainfo.MetaInfo, idx int, h http.Header) (*http.Response, error) {
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
	tr := newTransfer(orig, t, m, idx)
	w.sent = &tr.sent
	id := p.addTransfer(tr)
	p.wg.Go(func() {
		defer p.removeTransfer(id)
		defer release()
		defer stopBase()
		defer cancel()
		defer rd.Close()
		stopWatch := p.watchProgress(ctx, cancel, &tr.sent, 0)
		defer stopWatch()
		http.ServeContent(w, asServed(orig, rd.Size()), "", negotiate.ModTime(m), startingReader{rd, w})
		w.WriteHeader(http.StatusOK) // in case ServeContent wrote nothing
		w.start()                    // a response with no body starts here
		if err := w.flush(); err != nil {
			return
		}
		if w.declared >= 0 && w.written < w.declared {
			pw.CloseWithError(errTruncated)
			return
		}
		pw.Close()
	})
	// Headers go out with the first byte of the file: until then the
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
	resp := newResponse(orig, w.status, w.header, pr, w.declared)
	if orig.Method == http.MethodHead {
		resp.Body = http.NoBody
		pr.Close()
	}
	return resp, nil
}

// pipeWriter is the http.ResponseWriter ServeContent writes to: it holds
// the status and headers until WriteHeader, then streams the body into a
// pipe. What comes before the file's first byte (a multipart answer's
// boundary and part headers) is held until that byte has been read.
type pipeWriter struct {
	header   http.Header
	pw       *io.PipeWriter
	started  chan struct{} // closed at the file's first byte, or when there is none
	pending  []byte        // written before started, at most maxPending bytes
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
// aborted: a client that stops reading but keeps its connection open
// blocks the stream's writes, and no context says it has gone.
const maxNoProgress = 2 * time.Minute

// watchProgress cancels a stream that has sent nothing for maxNoProgress,
// or, when first is not zero, no byte at all within first: a stream whose
// headers went out before its first bytes (see awaitFirst). The returned
// func stops the watch and waits for it.
func (p *Proxy) watchProgress(ctx context.Context, cancel context.CancelFunc, sent *atomic.Int64, first time.Duration) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	period := maxNoProgress / 8
	if first > 0 {
		period = min(period, first/8)
	}
	go func() {
		defer close(done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		start := time.Now()
		last, since := sent.Load(), start
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				n := sent.Load()
				switch {
				case n == 0 && first > 0 && now.Sub(start) >= first:
					p.log.Warn("no bytes from the swarm or the origin after the headers went out; aborting the stream", "after", first)
					cancel()
					return
				case n != last:
					last, since = n, now
				case now.Sub(since) >= maxNoProgress:
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
	if !isDone(w.started) {
		if len(w.pending)+len(b) <= maxPending {
			w.pending = append(w.pending, b...)
			return len(b), nil
		}
		w.start() // more than framing: it is the body
	}
	if err := w.flush(); err != nil {
		return 0, err
	}
	return w.send(b)
}

// maxPending bounds what a pipeWriter holds before the file's first byte:
// a multipart answer's first boundary and part headers.
const maxPending = 4 << 10

// flush sends what was held before the start.
func (w *pipeWriter) flush() error {
	if len(w.pending) == 0 {
		return nil
	}
	_, err := w.send(w.pending)
	w.pending = nil
	return err
}

func (w *pipeWriter) send(b []byte) (int, error) {
	n, err := w.pw.Write(b)
	w.written += int64(n)
	w.sent.Add(int64(n))
	return n, err
}

// startingReader starts a pipeWriter's response at the first bytes read
// from the file.
type startingReader struct {
	io.ReadSeeker
	w *pipeWriter
}

func (r startingReader) Read(p []byte) (int, error) {
	n, err := r.ReadSeeker.Read(p)
	if n > 0 {
		r.w.start()
	}
	return n, err
}

// newTransfer describes the response to orig from file idx of t.
func newTransfer(orig *http.Request, t *swarm.Torrent, m *metainfo.MetaInfo, idx int) *transfer {
	f := m.Info.Files[idx]
	return &transfer{App: orig.UserAgent(), URL: redact(orig.URL), File: f.DisplayPath(), Size: f.Length, Started: time.Now(),
		torrent: t, infohash: m.InfoHash, url: orig.URL.String()}
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
	magnets                        int64 // of transformed: named by a magnet
	served                         int64 // body bytes of finished synthesised responses
}

func (p *Proxy) count(f func(*totals)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.totals)
}
