package negotiate

import (
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// hopByHop lists the fields that describe one connection rather than the
// message (RFC 9110 §7.6.1), plus the legacy Proxy-Connection and
// Keep-Alive, in canonical form.
var hopByHop = [...]string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// RemoveHopByHop deletes from h the hop-by-hop fields and every field that a
// Connection field line nominates. All Connection lines are read, including
// empty ones and ones after an empty first line (HARDENING 52).
//
// Call it on a received message before adding any field of the proxy's own
// (Via, X-Forwarded-For): a client can nominate any name in Connection, and
// a field the proxy set must not be removable by the client.
func RemoveHopByHop(h http.Header) {
	if h == nil {
		return
	}
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// AddVia appends tbproxy's element to the Via of h, for a message received
// over HTTP/protoMajor.protoMinor: "1.1 tbproxy", "1.0 tbproxy", or "2
// tbproxy" for HTTP/2 (whose version has no minor part). An impossible
// version is written as 1.1.
func AddVia(h http.Header, protoMajor, protoMinor int) {
	if h == nil {
		return
	}
	var proto string
	switch {
	case protoMajor == 1 && protoMinor >= 0 && protoMinor <= 9:
		proto = "1." + strconv.Itoa(protoMinor)
	case protoMajor >= 2 && protoMajor <= 9 && protoMinor == 0:
		proto = strconv.Itoa(protoMajor)
	default:
		proto = "1.1"
	}
	h.Add("Via", proto+" "+Pseudonym)
}

// ViaLoop reports whether any Via element of h names tbproxy as its
// received-by, which means that a tbproxy already handled the message: this
// one (a forwarding loop, HARDENING 49) or another one in a chain. Which of
// the two cannot be told from Via alone; InjectAccept uses it not to
// negotiate twice, and the proxy may refuse a request that also targets its
// own listen address. Comments in Via may hold commas and are skipped.
func ViaLoop(h http.Header) bool {
	for _, v := range h.Values("Via") {
		for _, elem := range splitVia(v) {
			f := strings.Fields(elem)
			if len(f) >= 2 && strings.EqualFold(f[1], Pseudonym) {
				return true
			}
		}
	}
	return false
}

// splitVia splits a Via field value into elements at the commas outside
// comments, dropping the comments.
func splitVia(v string) []string {
	var out []string
	var cur strings.Builder
	depth := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, cur.String())
}
