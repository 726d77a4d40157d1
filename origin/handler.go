package origin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/tbproxy/tbproxy/negotiate"
)

// Handler wraps next with the negotiation. A GET or HEAD that accepts
// application/x-bittorrent (q > 0), carries no Authorization or Cookie, and
// names a published file whose torrent is ready (or becomes ready within
// Config.Wait) is answered with the metainfo:
//
//   - Content-Type: application/x-bittorrent, Content-Length;
//   - Vary: Accept, since the answer depends on it;
//   - ETag: "mi-<info-hash>-<8 hex of the body's SHA-256>", strong, as the
//     body is a pure function of the file's version, the tracker and the
//     URL; If-None-Match is answered with 304;
//   - Cache-Control: no-cache, so that caches store it and revalidate it;
//   - with Config.PlainIsFile, what a plain request gets: the file's length
//     and Last-Modified date (negotiate.SetPlainFile), and its
//     Content-Type as http.FileServer gives it (negotiate.SetPlainType).
//
// Every other request is served by next, untouched but for Vary: Accept,
// which is added for negotiable resources.
func (p *Publisher) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.serve(w, r, next)
	})
}

func (p *Publisher) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		next.ServeHTTP(w, r)
		return
	}
	key, ok := cleanKey(r.URL.Path)
	if !ok || !p.included(key) {
		next.ServeHTTP(w, r)
		return
	}
	want := negotiate.AcceptsTorrent(r.Header) && !credentialed(r)
	res, ok := p.resolver.Resolve(r, want)
	if !ok || res.Size <= 0 || res.Size < p.cfg.minSize {
		next.ServeHTTP(w, r)
		return
	}
	addVaryAccept(w.Header())
	if _, own := p.resolver.(varySetter); own {
		r = r.WithContext(context.WithValue(r.Context(), varyAddedKey{}, true))
	}
	if want {
		if e := p.await(r.Context(), res); e != nil && p.serveMetainfo(w, r, e) {
			return
		}
	}
	next.ServeHTTP(w, r)
}

// varySetter is implemented by a Resolver whose handler adds Vary: Accept
// to the responses it proxies; the Publisher marks the requests for which
// it already did, with varyAddedKey in the context.
type varySetter interface{ setsVary() }

type varyAddedKey struct{}

// varyAdded reports whether the Publisher added Vary: Accept for the
// request that ctx belongs to.
func varyAdded(ctx context.Context) bool {
	v, _ := ctx.Value(varyAddedKey{}).(bool)
	return v
}

// included reports whether the globs publish key.
func (p *Publisher) included(key string) bool {
	base := path.Base(key)
	match := func(pat string) bool {
		name := base
		if strings.Contains(pat, "/") {
			name = key
		}
		ok, _ := path.Match(pat, name)
		return ok
	}
	for _, pat := range p.cfg.Exclude {
		if match(pat) {
			return false
		}
	}
	if len(p.cfg.Include) == 0 {
		return true
	}
	for _, pat := range p.cfg.Include {
		if match(pat) {
			return true
		}
	}
	return false
}

// serveMetainfo answers r with e's metainfo. It returns false, having
// written nothing, when the metainfo cannot be encoded.
func (p *Publisher) serveMetainfo(w http.ResponseWriter, r *http.Request, e *entry) bool {
	rd := e.rendered.Load()
	if u := p.cfg.PublicURL(r); rd == nil || rd.url != u {
		var err error
		if rd, err = p.render(e, u); err != nil {
			p.cfg.Logger.Error("cannot encode metainfo", "key", e.res.Key, "err", err)
			return false
		}
		e.rendered.Store(rd)
	}
	h := w.Header()
	h.Set("Etag", rd.etag)
	h.Set("Cache-Control", "no-cache")
	if p.cfg.PlainIsFile {
		negotiate.SetPlainFile(h, e.res.Size, e.res.ModTime)
		negotiate.SetPlainType(h, rd.plainType)
	}
	if noneMatch(r.Header, rd.etag) {
		w.WriteHeader(http.StatusNotModified)
		return true
	}
	h.Set("Content-Type", negotiate.MediaType)
	h.Set("Content-Length", rd.length)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(rd.body)
	}
	return true
}

// render encodes e's metainfo with url as its url-list.
func (p *Publisher) render(e *entry, url string) (*rendered, error) {
	m := *e.mi
	if url != "" {
		m.URLList = []string{url}
	}
	body, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	rd := &rendered{
		url:    url,
		body:   body,
		etag:   `"mi-` + m.InfoHash.HexString() + "-" + hex.EncodeToString(sum[:4]) + `"`,
		length: strconv.Itoa(len(body)),
	}
	if p.cfg.PlainIsFile {
		rd.plainType = fileServerType(e.res)
	}
	return rd, nil
}

// fileServerType is the Content-Type http.FileServer gives res's file:
// by the extension of its URL's last element, else by sniffing its first
// 512 bytes; "" when the file cannot be read.
func fileServerType(res Resource) string {
	if t := mime.TypeByExtension(path.Ext(res.Key)); t != "" {
		return t
	}
	f, err := os.Open(res.Path)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 512)
	n, err := io.ReadFull(f, buf)
	if err != nil && n == 0 {
		return ""
	}
	return http.DetectContentType(buf[:n])
}
