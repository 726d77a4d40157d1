package negotiate

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"strings"
)

// Content codings of an origin's answer that the proxy decodes to sniff and
// read metainfo (RFC 9110, section 8.4.1). Others (br, zstd) are not: such
// an answer is judged by its Content-Type alone, and metainfo in it fails
// ReadMetainfo.
const (
	codingIdentity = ""
	codingGzip     = "gzip"
	codingDeflate  = "deflate"
)

// ErrCoding is a Content-Encoding the proxy does not decode: several
// codings, or one other than gzip and deflate.
var ErrCoding = errors.New("negotiate: content coding not decoded")

// coding returns the one content coding of h that Decoded understands, ""
// for none, or ErrCoding.
func coding(h http.Header) (string, error) {
	vs := h.Values("Content-Encoding")
	var cs []string
	for _, v := range vs {
		for _, c := range splitList(v) {
			if c = strings.ToLower(c); c != "" && c != "identity" {
				cs = append(cs, c)
			}
		}
	}
	switch {
	case len(cs) == 0:
		return codingIdentity, nil
	case len(cs) > 1:
		return "", ErrCoding
	case cs[0] == "gzip" || cs[0] == "x-gzip":
		return codingGzip, nil
	case cs[0] == "deflate":
		return codingDeflate, nil
	}
	return "", ErrCoding
}

// Decoded returns a reader of body decoded by the Content-Encoding of h:
// body itself when there is none. A coding it does not decode returns
// ErrCoding. The caller bounds what it reads (ReadMetainfo does).
func Decoded(body io.Reader, h http.Header) (io.Reader, error) {
	c, err := coding(h)
	if err != nil {
		return nil, err
	}
	return decoder(body, c)
}

func decoder(body io.Reader, c string) (io.Reader, error) {
	switch c {
	case codingGzip:
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, err
		}
		zr.Multistream(false)
		return zr, nil
	case codingDeflate:
		// RFC 9110's deflate is zlib-framed; some servers send raw
		// deflate, which a zlib header check tells apart.
		br := bufio.NewReader(body)
		if hdr, _ := br.Peek(2); len(hdr) == 2 && (uint16(hdr[0])<<8|uint16(hdr[1]))%31 == 0 && hdr[0]&0x0f == 8 {
			return zlib.NewReader(br)
		}
		return flate.NewReader(br), nil
	}
	return body, nil
}

// PrefixOf is Prefix for an answer with headers h: the start of the body,
// decoded by its Content-Encoding when that is gzip or deflate, peeked from
// br without consuming it, so that an answer passed on goes as it came. It
// waits for no more of the body than Prefix would of the decoded one, and
// for no more than SniffLen bytes of the encoded one. An answer in a coding
// it does not decode, or whose start does not decode, gives nil.
func PrefixOf(br *bufio.Reader, h http.Header) []byte {
	c, err := coding(h)
	switch {
	case err != nil:
		return nil
	case c == codingIdentity:
		return Prefix(br, h.Get("Content-Type"))
	}
	typed := isTorrentType(h.Get("Content-Type"))
	for n, round := 1, 0; ; round++ {
		// Whatever has arrived, and at least n bytes: one more than was
		// looked at before, so that a trickling body is not waited for
		// beyond what decides; after a few rounds, twice as much, so that
		// it is not decoded anew for every byte.
		_, perr := br.Peek(n)
		enc, _ := br.Peek(br.Buffered())
		out := decodePrefix(enc, c)
		switch {
		case typed && len(out) >= len(magnetScheme):
			return out // enough for Decide's magnet check
		case !typed && len(out) >= 2 && !mayStartDict(out):
			return out // no bencoded dictionary: no torrent
		case perr != nil || len(enc) >= SniffLen || len(out) >= SniffLen:
			return out
		}
		n = len(enc) + 1
		if round >= 8 {
			n = min(2*len(enc), SniffLen)
		}
	}
}

// decodePrefix decodes what it can of enc, the start of a body in coding
// c, up to SniffLen bytes.
func decodePrefix(enc []byte, c string) []byte {
	r, err := decoder(bytes.NewReader(enc), c)
	if err != nil {
		return nil
	}
	out := make([]byte, SniffLen)
	n, _ := io.ReadFull(r, out)
	return out[:n]
}
