package negotiate

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// A Transparent BitTorrent origin that serves a URL's file itself may say,
// in its metainfo answer, what a plain request for the same URL gets: the
// file's length and its Last-Modified date. A proxy that finds them to
// match the torrent's file knows the origin serves that very file (and so
// will serve its bytes as a web seed) without asking the origin again.
// The statement is the origin's own, as a plain answer's headers would be:
// it is trusted as far as they are, and the bytes are verified all the
// same.
//
// It may say the plain answer's Content-Type too: the file's own type,
// which the proxy's answer then carries, where the file's name alone may
// not tell it (a name without an extension, a type the origin sets).
const (
	PlainLengthHeader       = "Tbp-Plain-Length"
	PlainLastModifiedHeader = "Tbp-Plain-Last-Modified"
	PlainContentTypeHeader  = "Tbp-Plain-Content-Type"
)

// maxMediaType bounds a PlainContentTypeHeader value.
const maxMediaType = 256

// ErrNoPlainFile reports a header without PlainLengthHeader.
var ErrNoPlainFile = errors.New("negotiate: the origin does not say what its plain answer is")

// maxHTTPDate bounds a PlainLastModifiedHeader value; an HTTP date is 29
// bytes in its preferred form and at most 33 in the obsolete ones.
const maxHTTPDate = 64

// PlainFile is what an origin said its plain answer is.
type PlainFile struct {
	Size         int64     // > 0
	LastModified time.Time // zero when not said
	// ContentType is the plain answer's type, "" when not said or not
	// usable (see ParsePlainFile).
	ContentType string
}

// SetPlainFile says in h that the plain answer is a file of size bytes
// last modified at mod (a zero mod is not said).
func SetPlainFile(h http.Header, size int64, mod time.Time) {
	h.Set(PlainLengthHeader, strconv.FormatInt(size, 10))
	if !mod.IsZero() {
		h.Set(PlainLastModifiedHeader, mod.UTC().Format(http.TimeFormat))
	}
}

// SetPlainType says in h that the plain answer's Content-Type is ctype
// (an empty ctype is not said).
func SetPlainType(h http.Header, ctype string) {
	if ctype != "" {
		h.Set(PlainContentTypeHeader, ctype)
	}
}

// ParsePlainFile reads what h says of the plain answer. It fails with
// ErrNoPlainFile when h says nothing, and with another error when what it
// says is malformed: not exactly one length, given in at most 19 digits
// and over zero; or a date that is repeated, over 64 bytes, or not an
// HTTP date. A Content-Type is kept only when it is said once, in at most
// maxMediaType bytes of printable ASCII, parses as a media type, and is
// not MediaType (a metainfo document is no file's plain answer); any
// other is ignored, not an error: the name's type serves then.
func ParsePlainFile(h http.Header) (PlainFile, error) {
	lengths := h.Values(PlainLengthHeader)
	if len(lengths) == 0 {
		return PlainFile{}, ErrNoPlainFile
	}
	if len(lengths) > 1 {
		return PlainFile{}, fmt.Errorf("negotiate: %s given %d times", PlainLengthHeader, len(lengths))
	}
	size, ok := ParseDigits(strings.Trim(lengths[0], " \t"))
	if !ok || size <= 0 {
		return PlainFile{}, fmt.Errorf("negotiate: %s is not a length over zero", PlainLengthHeader)
	}
	pf := PlainFile{Size: size}
	switch dates := h.Values(PlainLastModifiedHeader); {
	case len(dates) > 1:
		return PlainFile{}, fmt.Errorf("negotiate: %s given %d times", PlainLastModifiedHeader, len(dates))
	case len(dates) == 1:
		v := strings.Trim(dates[0], " \t")
		if len(v) > maxHTTPDate {
			return PlainFile{}, fmt.Errorf("negotiate: %s is over %d bytes", PlainLastModifiedHeader, maxHTTPDate)
		}
		mod, err := http.ParseTime(v)
		if err != nil {
			return PlainFile{}, fmt.Errorf("negotiate: %s is not an HTTP date", PlainLastModifiedHeader)
		}
		pf.LastModified = mod.UTC()
	}
	pf.ContentType = plainType(h.Values(PlainContentTypeHeader))
	return pf, nil
}

// plainType is the usable Content-Type among vs, or "".
func plainType(vs []string) string {
	if len(vs) != 1 {
		return ""
	}
	v := strings.Trim(vs[0], " \t")
	if v == "" || len(v) > maxMediaType {
		return ""
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return ""
		}
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil || mt == MediaType {
		return ""
	}
	return mime.FormatMediaType(mt, params) // "" for what it cannot write back
}
