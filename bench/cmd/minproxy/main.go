// Command minproxy is about the smallest forward HTTP proxy Go's net/http
// makes: it relays plain-HTTP requests with an http.Transport and nothing
// else (no CONNECT, no negotiation, no cache). The bench starts a fresh one
// per run, as it does tbproxy, to measure what the Go hop alone costs a
// first byte on the machine at hand (comparison 2): the floor under any
// first-byte figure of a proxy built on net/http.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("minproxy is listening on %s\n", ln.Addr())
	srv := &http.Server{Handler: newRelay(), ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// relay forwards each proxied plain-HTTP request to its origin and copies
// the answer back.
type relay struct{ tr *http.Transport }

func newRelay() relay {
	return relay{tr: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}}
}

func (rl relay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Scheme != "http" || r.URL.Host == "" {
		http.Error(w, "minproxy relays absolute http:// URLs only", http.StatusBadRequest)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	dropHopByHop(out.Header)
	resp, err := rl.tr.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	dropHopByHop(resp.Header)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// dropHopByHop removes the fields that describe one connection (RFC 9110,
// section 7.6.1): those Connection names, and the usual ones.
func dropHopByHop(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		h.Del(name)
	}
}
