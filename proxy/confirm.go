package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

// errOriginConfirmed ends the wait for a response's first verified bytes
// early: the origin has confirmed that it serves the file the torrent
// describes, so the headers can go out now.
var errOriginConfirmed = errors.New("proxy: the origin serves the torrent's file")

// confirmation is confirmOrigin running on its own goroutine, while the
// torrent opens.
type confirmation struct {
	ok     context.Context // done once the origin has confirmed
	fire   context.CancelFunc
	cancel context.CancelFunc
	done   chan struct{}
}

// confirmKey names a file an origin confirmed: the torrent, and the URL
// it was asked for by.
type confirmKey struct {
	ih  metainfo.Hash
	url string
}

const (
	// confirmedFor is how long a confirmation holds for the requests that
	// follow it.
	confirmedFor = time.Minute
	// maxConfirmed bounds the confirmations remembered.
	maxConfirmed = 1024
)

// startConfirm starts confirmOrigin for file idx of m, which orig asked
// for, unless the origin confirmed it within confirmedFor: then the
// confirmation it returns holds already. The caller must stop it.
func (p *Proxy) startConfirm(orig *http.Request, m *metainfo.MetaInfo, idx int) *confirmation {
	key := confirmKey{m.InfoHash, orig.URL.String()}
	ok, fire := context.WithCancel(context.Background())
	if at, found := p.confirmed.Get(key); found && time.Since(at) < confirmedFor {
		fire()
		done := make(chan struct{})
		close(done)
		return &confirmation{ok: ok, fire: fire, cancel: func() {}, done: done}
	}
	ctx, cancel := context.WithCancel(orig.Context())
	c := &confirmation{ok: ok, fire: fire, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		err := p.confirmOrigin(ctx, orig, negotiate.FileSize(&m.Info, idx), negotiate.ModTime(m))
		switch {
		case err == nil:
			p.confirmed.Add(key, time.Now())
			fire()
		case ctx.Err() == nil:
			p.log.Info("the origin does not confirm the torrent's file; headers wait for verified bytes", "url", redact(orig.URL), "why", err)
		}
	}()
	return c
}

// stop ends the confirmation, if it still runs, and waits for it. A nil
// confirmation is stopped already.
func (c *confirmation) stop() {
	if c == nil {
		return
	}
	c.cancel()
	<-c.done
	c.fire()
}

// confirmOrigin asks the origin, plainly and for one byte, for the file
// the client asked for, while the torrent opens and its first piece is
// fetched. The headers of a synthesised response wait for its first
// verified bytes, so that a swarm and an origin web seed that deliver
// nothing still leave the plain answer to fall back on. Once the origin
// has shown that it serves the very representation the torrent describes
// (and so will serve the bytes as a web seed), that wait buys nothing:
// the headers can go out at once, and a failure after them aborts the
// connection as any broken stream does.
//
// It returns nil when the answer is a 206 of the first byte, or a 200,
// of a file of exactly size bytes, neither encoded nor a metainfo
// document, and not modified after the torrent was made (mod, when
// known); otherwise an error saying what did not match.
func (p *Proxy) confirmOrigin(ctx context.Context, orig *http.Request, size int64, mod time.Time) error {
	req := orig.Clone(ctx)
	req.Method = http.MethodGet
	req.Body = http.NoBody
	req.ContentLength = 0
	for _, h := range stripped {
		req.Header.Del(h)
	}
	req.Header.Set("Range", "bytes=0-0")
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Del("Via")
	negotiate.AddVia(req.Header, req.ProtoMajor, req.ProtoMinor)
	resp, err := p.upstream.RoundTrip(req)
	if err != nil {
		return err
	}
	defer func() {
		// A short answer is read to its end, so that its connection is
		// kept for the web seed; a 200 of the whole file is cut off.
		io.CopyN(io.Discard, resp.Body, maxConfirmBody)
		resp.Body.Close()
	}()
	return checkConfirmation(resp, size, mod)
}

// maxConfirmBody is the most of a confirmation's body read to keep its
// connection.
const maxConfirmBody = 4 << 10

// checkConfirmation is confirmOrigin's test of the origin's answer.
func checkConfirmation(resp *http.Response, size int64, mod time.Time) error {
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return fmt.Errorf("encoded (%q)", ce)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == negotiate.MediaType {
		return errors.New("a metainfo document")
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, end, total, err := negotiate.ParseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != 0 || end != 1 {
			return fmt.Errorf("Content-Range %q is not the byte asked for", resp.Header.Get("Content-Range"))
		}
		if total != size {
			return fmt.Errorf("the file is %d bytes, the torrent's %d", total, size)
		}
	case http.StatusOK:
		if resp.ContentLength != size {
			return fmt.Errorf("the file is %d bytes, the torrent's %d", resp.ContentLength, size)
		}
	default:
		return fmt.Errorf("status %q", resp.Status)
	}
	if lm, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil && !mod.IsZero() && lm.After(mod) {
		return fmt.Errorf("modified at %s, after the torrent was made (%s)", lm.UTC().Format(time.RFC3339), mod.Format(time.RFC3339))
	}
	return nil
}
