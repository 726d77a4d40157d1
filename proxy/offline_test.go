package proxy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
)

func TestWantsFresh(t *testing.T) {
	for _, tt := range []struct {
		h    http.Header
		want bool
	}{
		{http.Header{}, false},
		{http.Header{"Cache-Control": {"no-cache"}}, true},
		{http.Header{"Cache-Control": {"No-Cache"}}, true},
		{http.Header{"Cache-Control": {"max-stale=60, no-store"}}, true},
		{http.Header{"Cache-Control": {" max-age=0 "}}, true},
		{http.Header{"Cache-Control": {`max-age="0"`}}, true},
		{http.Header{"Cache-Control": {"max-age=00"}}, true},
		{http.Header{"Cache-Control": {"max-age=60"}}, false},
		{http.Header{"Cache-Control": {"max-age=junk"}}, false},
		{http.Header{"Cache-Control": {"no-transform"}}, false},
		{http.Header{"Cache-Control": {"no-cachey"}}, false},
		{http.Header{"Pragma": {"no-cache"}}, true},
		{http.Header{"Pragma": {"x, NO-CACHE"}}, true},
		{http.Header{"Pragma": {"nocache"}}, false},
	} {
		if got := wantsFresh(tt.h); got != tt.want {
			t.Errorf("wantsFresh(%v) = %v, want %v", tt.h, got, tt.want)
		}
	}
}

func TestUnreachable(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"refused", dial, true},
		{"wrapped", fmt.Errorf("roundtrip: %w", dial), true},
		{"no such host", &net.DNSError{Err: "no such host", Name: "example.invalid", IsNotFound: true}, true},
		{"forbidden", &net.OpError{Op: "dial", Net: "tcp", Err: errForbiddenTarget}, false},
		{"read", &net.OpError{Op: "read", Net: "tcp", Err: errors.New("reset")}, false},
		{"certificate", &x509.UnknownAuthorityError{}, false},
		{"canceled", context.Canceled, false},
	} {
		if got := unreachable(tt.err); got != tt.want {
			t.Errorf("%s: unreachable(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}
