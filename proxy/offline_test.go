package proxy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"testing"
)

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
