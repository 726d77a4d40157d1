package origin

import (
	"net/http"
	"strings"

	"github.com/tbproxy/tbproxy/negotiate"
)

// credentialed reports whether r carries credentials, so that the content
// may be private to the user and must never become a public torrent.
func credentialed(r *http.Request) bool {
	return len(r.Header["Authorization"]) > 0 || len(r.Header["Cookie"]) > 0
}

// noneMatch reports whether the If-None-Match of h matches etag, by the
// weak comparison RFC 9110 §13.1.2 prescribes.
func noneMatch(h http.Header, etag string) bool {
	for _, line := range h["If-None-Match"] {
		for {
			line = strings.TrimLeft(line, " \t,")
			if line == "" {
				break
			}
			if line[0] == '*' {
				return true
			}
			line = strings.TrimPrefix(line, "W/")
			if len(line) == 0 || line[0] != '"' {
				break // malformed: ignore the rest of the line
			}
			end := strings.IndexByte(line[1:], '"')
			if end < 0 {
				break
			}
			if line[:end+2] == etag {
				return true
			}
			line = line[end+2:]
		}
	}
	return false
}

// addVaryAccept adds Accept to the Vary of h unless it is listed already,
// or Vary is "*".
func addVaryAccept(h http.Header) {
	if !negotiate.VariesOn(h, "Accept") {
		h.Add("Vary", "Accept")
	}
}
