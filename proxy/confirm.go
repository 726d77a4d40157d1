package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

// errOriginConfirmed ends the wait for a response's first verified bytes
// early: the origin has confirmed that it serves the file the torrent
// describes, so the headers can go out now.
var errOriginConfirmed = errors.New("proxy: the origin serves the torrent's file")

// errOriginDiffers is the origin showing another file than the torrent
// describes: another size, or modified after the torrent was made. A
// response whose headers have not gone out falls back to plain HTTP: the
// torrent is stale, and the client asked for the origin's file
// (HARDENING 69).
var errOriginDiffers = errors.New("proxy: the origin serves another file than the torrent")

// confirmation is confirmOrigin running on its own goroutine, while the
// metainfo is read and the torrent opens.
type confirmation struct {
	ok   context.Context // done once the origin has confirmed
	fire context.CancelFunc
	// differs is done, with a cause wrapping errOriginDiffers that says
	// how, once the origin has shown another file.
	differs context.Context
	differ  context.CancelCauseFunc
	// refused is done once the origin has answered the question with an
	// error status: it will not serve the file plainly, so its web seed
	// will not either.
	refused context.Context
	refuse  context.CancelFunc
	ctx     context.Context // the question's, ended by cancel
	cancel  context.CancelFunc
	done    chan struct{}
	want    chan expected // what the answer must show, once the metainfo is read
	url     string        // the URL asked about, in Proxy.asking while it runs; "" if unshared

	// Guarded by Proxy.mu: the responses that hold it (each releases it
	// once), whether want was sent and what, and whether one of them let it
	// finish on its own (release).
	users    int
	wanted   bool
	expect   expected
	detached bool
	// Guarded by Proxy.mu: the origin's answer, once it is in, and
	// whether it was judged where the file it must match was told
	// (confirmFor), rather than on the question's goroutine.
	answered bool
	resp     *http.Response
	err      error
	judged   bool
}

// expected is what an origin's answer must show to confirm a torrent's
// file: its size, and no modification after the torrent was made.
type expected struct {
	ih   metainfo.Hash
	size int64
	mod  time.Time
}

// expectedOf is what confirms file idx of m.
func expectedOf(m *metainfo.MetaInfo, idx int) expected {
	return expected{ih: m.InfoHash, size: negotiate.FileSize(&m.Info, idx), mod: negotiate.ModTime(m)}
}

func (e expected) equal(o expected) bool {
	return e.ih == o.ih && e.size == o.size && e.mod.Equal(o.mod)
}

// confirmedFile is what the proxy remembers of a URL it transformed
// lately: its torrent, and whether the origin confirmed the file or the
// file was complete and the origin was not asked.
type confirmedFile struct {
	ih      metainfo.Hash
	at      time.Time
	asked   bool
	differs bool // the origin's bytes failed the torrent's hashes (originBytesDiffer)
}

// bytesDiffer reports whether f says that the origin's bytes failed the
// hashes of torrent ih, within differsFor.
func (f confirmedFile) bytesDiffer(ih metainfo.Hash) bool {
	return f.differs && f.ih == ih && time.Since(f.at) < differsFor
}

const (
	// confirmedFor is how long a confirmation holds for the requests that
	// follow it.
	confirmedFor = time.Minute
	// maxConfirmed bounds the confirmations remembered.
	maxConfirmed = 1024
	// differsFor is how long an origin whose bytes failed a torrent's
	// hashes is answered plainly for that torrent's URL: until its
	// metainfo names another torrent, or for this long.
	differsFor = time.Hour
)

// originBytesDiffer remembers that the origin's plain answer to u, the
// implicit web seed of torrent ih, brought bytes that failed the torrent's
// hashes: it serves another file (one changed with its size and time
// kept, which no confirmation sees). Requests for u that follow, within
// differsFor, are answered plainly (confirmFor).
func (p *Proxy) originBytesDiffer(u *url.URL, ih metainfo.Hash) {
	p.rememberMu.Lock()
	p.confirmed.Add(u.String(), confirmedFile{ih: ih, at: time.Now(), differs: true})
	p.urlsChanged.Store(true)
	p.rememberMu.Unlock()
	p.log.Warn("the origin's bytes fail the torrent's hashes; its URL will be answered plainly", "url", redact(u), "infohash", ih, "for", differsFor)
	p.abortUnsent(u.String(), ih, "its origin serves another file")
}

// abortUnsent aborts the streams of torrent ih for url that have sent
// nothing yet, and have nothing to come from the origin, which served them
// so far (why, logged with attrs): now, not when their first-byte budget
// runs out. Before its headers that is a plain answer (serve falls back);
// after them, a broken one, which the client's retry turns into a plain
// answer.
func (p *Proxy) abortUnsent(url string, ih metainfo.Hash, why string, attrs ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, tr := range p.transfers {
		if tr.infohash == ih && tr.url == url && tr.abort != nil && tr.sent.Load() == 0 {
			p.log.Info("aborting a stream that has sent nothing: "+why, append([]any{"url", tr.URL}, attrs...)...)
			tr.abort()
		}
	}
}

// askEarly starts confirmOrigin for orig as soon as the origin's answer to
// the negotiation is seen to be metainfo, so that the question is on the
// wire while the answer is read: the file it must match is told later
// (confirmFor). A URL transformed within confirmedFor is not asked about
// here (nil): confirmFor decides, knowing the torrent.
func (p *Proxy) askEarly(orig *http.Request) *confirmation {
	if f, ok := p.confirmed.Get(orig.URL.String()); ok && time.Since(f.at) < confirmedFor {
		return nil
	}
	return p.ask(orig, true)
}

// plainSaid reads what the origin's answer to orig, with headers h, says
// of its plain answer (negotiate.ParsePlainFile): nil when it says
// nothing, or something malformed, which is logged and counts as nothing.
func (p *Proxy) plainSaid(orig *http.Request, h http.Header) *negotiate.PlainFile {
	pf, err := negotiate.ParsePlainFile(h)
	if err != nil {
		if !errors.Is(err, negotiate.ErrNoPlainFile) {
			p.log.Debug("the origin's word on its plain answer is malformed; asking it", "url", redact(orig.URL), "err", err)
		}
		return nil
	}
	return &pf
}

// remember records f for url, unless the origin's bytes were seen to
// differ from the same torrent within differsFor: bytes that failed the
// torrent's hashes outweigh a size and a date that matched (a question
// answered after the bytes came must not undo what they showed).
func (p *Proxy) remember(url string, f confirmedFile) {
	p.rememberMu.Lock()
	defer p.rememberMu.Unlock()
	if old, ok := p.confirmed.Get(url); ok && old.bytesDiffer(f.ih) {
		return
	}
	p.confirmed.Add(url, f)
	p.urlsChanged.Store(true)
}

// confirmFor decides how file idx of m is confirmed for orig, given c,
// the question askEarly may have started, and said, what the origin's
// metainfo answer said of its plain answer (plainSaid): not at all when
// the whole file is at hand (nil); by the origin's word, when said is not
// nil; already, when the origin confirmed it within confirmedFor;
// otherwise by c, or by a question asked now. The caller must release
// what it returns.
func (p *Proxy) confirmFor(c *confirmation, orig *http.Request, said *negotiate.PlainFile, m *metainfo.MetaInfo, idx int) *confirmation {
	if decided, atHand, err := p.known(orig.URL.String(), said, m, idx); decided {
		p.release(c, false)
		if atHand {
			return nil
		}
		return settled(err)
	}
	exp := expectedOf(m, idx)
	if c == nil {
		c = p.ask(orig, true)
	}
	p.mu.Lock()
	send, same := !c.wanted, !c.wanted || c.expect.equal(exp)
	if send {
		c.wanted, c.expect = true, exp
	}
	p.mu.Unlock()
	if !same {
		// Joined a question about another torrent of the URL: ask anew.
		p.release(c, false)
		c, send = p.ask(orig, false), true
	}
	if send {
		p.tell(c, orig, exp)
	}
	return c
}

// tell gives confirmation c the file its answer must show. An answer
// already in is judged here, at once: the question's goroutine, which
// would otherwise judge it, may have to wait for a processor, and the
// response's headers wait for the verdict.
func (p *Proxy) tell(c *confirmation, orig *http.Request, exp expected) {
	p.mu.Lock()
	now := c.answered && !c.judged
	c.judged = now
	resp, err := c.resp, c.err
	p.mu.Unlock()
	if now {
		c.settle(p, orig, resp, err, exp)
	}
	c.want <- exp
}

// settle judges the origin's answer to c (resp, or err) against want,
// and fires what the verdict says.
func (c *confirmation) settle(p *Proxy, orig *http.Request, resp *http.Response, err error, want expected) {
	switch err := p.judge(orig.URL.String(), resp, err, want); {
	case err == nil:
		c.fire()
	case errors.Is(err, errOriginDiffers):
		c.differ(err)
	case resp != nil && resp.StatusCode >= 400:
		p.log.Info("the origin does not serve the file plainly; headers wait for verified bytes, if any source is left", "url", redact(orig.URL), "status", resp.Status)
		c.refuse()
	case c.ctx.Err() == nil:
		p.log.Info("the origin does not confirm the torrent's file; headers wait for verified bytes", "url", redact(orig.URL), "why", err)
	}
}

// known tells, without asking the origin, whether file idx of m is the
// origin's file for url. decided is false when only a question can tell.
// Otherwise err wraps errOriginDiffers when the origin's bytes failed the
// torrent's hashes lately or its word (said) shows another file, and is
// nil when its word matches, it confirmed the file within confirmedFor,
// or the whole file is at hand (atHand), which needs no confirmation.
func (p *Proxy) known(url string, said *negotiate.PlainFile, m *metainfo.MetaInfo, idx int) (decided, atHand bool, err error) {
	if err := p.convicted(url, m.InfoHash); err != nil {
		return true, false, err
	}
	if t, ok := p.cfg.Engine.Torrent(m.InfoHash); ok && isDone(t.Complete()) {
		p.remember(url, confirmedFile{ih: m.InfoHash, at: time.Now()})
		return true, true, nil
	}
	if said != nil {
		e := expectedOf(m, idx)
		if err := sameFile(said.Size, said.LastModified, e.size, e.mod); err != nil {
			return true, false, err
		}
		p.remember(url, confirmedFile{ih: m.InfoHash, at: time.Now(), asked: true})
		return true, false, nil
	}
	if f, ok := p.confirmed.Get(url); ok && f.asked && f.ih == m.InfoHash && time.Since(f.at) < confirmedFor {
		return true, false, nil
	}
	return false, false, nil
}

// convicted returns an error wrapping errOriginDiffers when the origin's
// bytes for url failed the hashes of torrent ih lately
// (originBytesDiffer), else nil.
func (p *Proxy) convicted(url string, ih metainfo.Hash) error {
	if f, ok := p.confirmed.Get(url); ok && f.bytesDiffer(ih) {
		return fmt.Errorf("%w: its bytes failed the torrent's hashes", errOriginDiffers)
	}
	return nil
}

// judge checks the origin's answer to confirmOrigin (resp, or the error
// err that came instead) against want, and remembers for url a file it
// confirms (checkConfirmation).
func (p *Proxy) judge(url string, resp *http.Response, err error, want expected) error {
	if err == nil {
		err = checkConfirmation(resp, want.size, want.mod)
	}
	if err == nil {
		p.remember(url, confirmedFile{ih: want.ih, at: time.Now(), asked: true})
	}
	return err
}

// settled is a confirmation already answered: the origin confirmed the
// file when why is nil; otherwise it showed another file (why wraps
// errOriginDiffers).
func settled(why error) *confirmation {
	ok, fire := context.WithCancel(context.Background())
	differs, differ := context.WithCancelCause(context.Background())
	if why == nil {
		fire()
	} else {
		differ(why)
	}
	done := make(chan struct{})
	close(done)
	return &confirmation{ok: ok, fire: fire, differs: differs, differ: differ, refused: context.Background(),
		cancel: func() {}, done: done, users: 1}
}

// ask starts confirmOrigin for orig; its answer is checked once the file
// it must match arrives on want. A shared question joins the one under
// way for the same URL, if any: requests that follow each other closely
// (a player's ranges) ask the origin once.
func (p *Proxy) ask(orig *http.Request, shared bool) *confirmation {
	url := orig.URL.String()
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.asking[url]; shared && c != nil {
		c.users++
		return c
	}
	ok, fire := context.WithCancel(context.Background())
	differs, differ := context.WithCancelCause(context.Background())
	// Not the client's context: a confirmation that the response no longer
	// waits for may finish on its own (release).
	ctx, cancel := context.WithTimeout(p.base, confirmTimeout)
	refused, refuse := context.WithCancel(context.Background())
	c := &confirmation{ok: ok, fire: fire, differs: differs, differ: differ, refused: refused, refuse: refuse,
		ctx: ctx, cancel: cancel, done: make(chan struct{}), want: make(chan expected, 1), users: 1}
	if shared {
		c.url = url
		if p.asking == nil {
			p.asking = map[string]*confirmation{}
		}
		p.asking[url] = c
	}
	go func() {
		defer func() {
			p.mu.Lock()
			if c.url != "" && p.asking[c.url] == c {
				delete(p.asking, c.url)
			}
			p.mu.Unlock()
			close(c.done)
		}()
		resp, err := p.confirmOrigin(ctx, orig)
		p.mu.Lock()
		c.answered, c.resp, c.err = true, resp, err
		p.mu.Unlock()
		var want expected
		select {
		case want = <-c.want:
		case <-ctx.Done():
			return
		}
		p.mu.Lock()
		judged := c.judged
		c.judged = true
		p.mu.Unlock()
		if !judged {
			c.settle(p, orig, resp, err, want)
		}
	}()
	return c
}

// confirmTimeout bounds a confirmation.
const confirmTimeout = 30 * time.Second

// release lets go of confirmation c for one response. The last to let
// go ends it, and waits for it; unless one of them let it finish on its
// own (detach), once its response no longer waited for it (its headers
// went out with verified bytes): its answer is then remembered for the
// requests that follow, within confirmedFor, and the proxy owns it
// (flights) and ends it when it closes. A nil confirmation is released
// already.
func (p *Proxy) release(c *confirmation, detach bool) {
	if c == nil {
		return
	}
	p.mu.Lock()
	c.users--
	c.detached = c.detached || detach
	last, detached := c.users == 0, c.detached
	p.mu.Unlock()
	if !last {
		return
	}
	if (detached || c.decided()) && !isDone(c.done) && p.goFlight(c.wait) {
		return
	}
	c.cancel()
	c.wait()
}

// decided reports whether c's verdict is in: the origin confirmed the
// file or showed another. Its goroutine has nothing left to do but end,
// which the response need not wait for.
func (c *confirmation) decided() bool {
	return isDone(c.ok.Done()) || isDone(c.differs.Done())
}

// verdict waits, while ctx lasts, for what c tells of the file: nil when
// the origin confirmed it or could not tell (a nil c, the file at hand,
// needs no question); an error wrapping errOriginDiffers when it showed
// another file; ctx's error when ctx ended first.
func (c *confirmation) verdict(ctx context.Context) error {
	if c == nil {
		return nil
	}
	select {
	case <-c.ok.Done():
		return nil
	case <-c.differs.Done():
		return context.Cause(c.differs)
	case <-c.done:
		if isDone(c.differs.Done()) {
			return context.Cause(c.differs)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wait waits for the confirmation to end. It settles nothing: only the
// origin's answer fires ok or differs, so that a response that joined the
// question (ask) and waits on them still falls back, or waits for verified
// bytes, when the origin did not confirm the file.
func (c *confirmation) wait() {
	<-c.done
	c.cancel()
}

// confirmOrigin asks the origin, plainly and for one byte, for the file
// the client asked for, while the torrent opens and its first piece is
// fetched, and returns its answer, read and closed. The headers of a
// synthesised response wait for its first verified bytes, so that a swarm
// and an origin web seed that deliver nothing still leave the plain answer
// to fall back on. Once the origin has shown that it serves the very
// representation the torrent describes (checkConfirmation), and so will
// serve the bytes as a web seed, that wait buys nothing: the headers can
// go out at once, and a failure after them aborts the connection as any
// broken stream does.
func (p *Proxy) confirmOrigin(ctx context.Context, orig *http.Request) (*http.Response, error) {
	req := orig.Clone(ctx)
	req.Method = http.MethodGet
	req.Body = http.NoBody
	req.ContentLength = 0
	dropForOrigin(req.Header)
	req.Header.Set("Range", "bytes=0-0")
	req.Header.Set("Accept-Encoding", "identity")
	negotiate.AddVia(req.Header, req.ProtoMajor, req.ProtoMinor)
	resp, err := p.send(req)
	if err != nil {
		return nil, err
	}
	// A short answer is read to its end, so that its connection is kept
	// for the web seed; a 200 of the whole file is cut off.
	io.CopyN(io.Discard, resp.Body, maxConfirmBody)
	resp.Body.Close()
	return resp, nil
}

// maxConfirmBody is the most of a confirmation's body read to keep its
// connection.
const maxConfirmBody = 4 << 10

// checkConfirmation tests confirmOrigin's answer: it returns nil when the
// answer is a 206 of the first byte, or a 200, of a file of exactly size
// bytes, neither encoded nor a metainfo document, and not modified after
// the torrent was made (mod, when known); otherwise an error saying what
// did not match, which wraps errOriginDiffers when the origin's file is
// known to be another (its size or its date).
func checkConfirmation(resp *http.Response, size int64, mod time.Time) error {
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return fmt.Errorf("encoded (%q)", ce)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == negotiate.MediaType {
		return errors.New("a metainfo document")
	}
	var shown int64
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, end, total, err := negotiate.ParseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != 0 || end != 1 {
			return fmt.Errorf("Content-Range %q is not the byte asked for", resp.Header.Get("Content-Range"))
		}
		if total < 0 {
			return errors.New("the file's size is not given")
		}
		shown = total
	case http.StatusOK:
		if resp.ContentLength < 0 {
			return errors.New("the file's size is not given")
		}
		shown = resp.ContentLength
	default:
		return fmt.Errorf("status %q", resp.Status)
	}
	lm, _ := http.ParseTime(resp.Header.Get("Last-Modified"))
	return sameFile(shown, lm, size, mod)
}

// sameFile tests what the origin shows of its file, size bytes last
// modified at lm (zero when not shown), against the torrent's file of want
// bytes, made at mod (zero when not known): an error wrapping
// errOriginDiffers says how they differ.
func sameFile(size int64, lm time.Time, want int64, mod time.Time) error {
	if size != want {
		return fmt.Errorf("%w: the file is %d bytes, the torrent's %d", errOriginDiffers, size, want)
	}
	if !lm.IsZero() && !mod.IsZero() && lm.After(mod) {
		return fmt.Errorf("%w: modified at %s, after the torrent was made (%s)", errOriginDiffers, lm.UTC().Format(time.RFC3339), mod.Format(time.RFC3339))
	}
	return nil
}
