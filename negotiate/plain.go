package negotiate

import (
	"errors"
	"fmt"
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
const (
	PlainLengthHeader       = "Tbp-Plain-Length"
	PlainLastModifiedHeader = "Tbp-Plain-Last-Modified"
)

// ErrNoPlainFile reports a header without PlainLengthHeader.
var ErrNoPlainFile = errors.New("negotiate: the origin does not say what its plain answer is")

// maxHTTPDate bounds a PlainLastModifiedHeader value; an HTTP date is 29
// bytes in its preferred form and at most 33 in the obsolete ones.
const maxHTTPDate = 64

// PlainFile is what an origin said its plain answer is.
type PlainFile struct {
	Size         int64     // > 0
	LastModified time.Time // zero when not said
}

// SetPlainFile says in h that the plain answer is a file of size bytes
// last modified at mod (a zero mod is not said).
func SetPlainFile(h http.Header, size int64, mod time.Time) {
	h.Set(PlainLengthHeader, strconv.FormatInt(size, 10))
	if !mod.IsZero() {
		h.Set(PlainLastModifiedHeader, mod.UTC().Format(http.TimeFormat))
	}
}

// ParsePlainFile reads what h says of the plain answer. It fails with
// ErrNoPlainFile when h says nothing, and with another error when what it
// says is malformed: not exactly one length, given in at most 19 digits
// and over zero; or a date that is repeated, over 64 bytes, or not an
// HTTP date.
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
	return pf, nil
}
