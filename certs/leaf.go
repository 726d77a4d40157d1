package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// maxLeafCacheAge bounds how long a minted leaf is reused, whatever its
// validity.
const maxLeafCacheAge = 7 * 24 * time.Hour

// leaf is one cached leaf certificate and when to stop handing it out.
type leaf struct {
	cert    *tls.Certificate
	refresh time.Time // mint anew from here on; well before cert's NotAfter
}

// Leaf returns a certificate for host signed by the CA, minting it on first
// use and caching it per host. host is a DNS name or an IP literal, with or
// without a port and, for IPv6, brackets ("example.com", "example.com:443",
// "[::1]:443", "10.0.0.1"). Letter case and a trailing dot are ignored,
// except that an IP literal with a trailing dot is refused.
//
// A DNS name becomes the certificate's only DNS SAN, an IP literal its only
// IP SAN. Host names must already be ASCII: an internationalised name is
// refused rather than converted, so the caller passes the A-label
// ("xn--...") form that the client put in its CONNECT or SNI. Wildcards,
// IPv6 zones and malformed names are refused too.
//
// Each leaf has its own ECDSA P-256 key from crypto/rand and a random
// serial, and is valid for at most LeafValidity, never past the CA's
// expiry. A cached leaf is reused for at most half its validity or a week,
// whichever is shorter; concurrent calls for one host mint once. The
// returned certificate is shared: do not modify it.
func (ca *CA) Leaf(host string) (*tls.Certificate, error) {
	name, ip, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	if l, ok := ca.cache.Get(name); ok && ca.now().Before(l.refresh) {
		return l.cert, nil
	}
	v, err, _ := ca.mints.Do(name, func() (any, error) {
		now := ca.now()
		if l, ok := ca.cache.Get(name); ok && now.Before(l.refresh) {
			return l.cert, nil // minted by a flight that ended just before
		}
		l, err := ca.mint(name, ip, now)
		if err != nil {
			return nil, err
		}
		ca.cache.Add(name, l)
		return l.cert, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*tls.Certificate), nil
}

// mint creates a leaf for name (an IP literal when ip is valid).
func (ca *CA) mint(name string, ip netip.Addr, now time.Time) (leaf, error) {
	if ca.onMint != nil {
		ca.onMint(name)
	}
	notBefore := now.Add(-backdate)
	notAfter := notBefore.Add(LeafValidity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	if notAfter.Sub(now) < minLeafLife {
		return leaf{}, fmt.Errorf("certs: ca certificate expires on %s; run \"tbproxy ca rotate\"",
			ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return leaf{}, fmt.Errorf("certs: generating leaf key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return leaf{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if len(name) <= 64 { // the X.509 upper bound for a common name
		tmpl.Subject = pkix.Name{CommonName: name}
	}
	if ip.IsValid() {
		tmpl.IPAddresses = []net.IP{ip.AsSlice()}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return leaf{}, fmt.Errorf("certs: signing leaf for %q: %w", name, err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		return leaf{}, fmt.Errorf("certs: parsing leaf for %q: %w", name, err)
	}
	reuse := min(notAfter.Sub(notBefore)/2, maxLeafCacheAge)
	return leaf{
		cert:    &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: parsed},
		refresh: now.Add(reuse),
	}, nil
}

// normalizeHost reduces host to the cache key and SAN: a lower-case DNS name
// without trailing dot, or the canonical text of an IP address (IPv4-mapped
// IPv6 unmapped), which is then also returned as ip. A DNS name is at most
// 253 bytes of labels of 1-63 bytes and never parses as an IP address; an
// IP literal with a trailing dot ("1.2.3.4.") is refused. Normalizing the
// result again returns it unchanged.
func normalizeHost(host string) (name string, ip netip.Addr, err error) {
	h := host
	if hp, _, err := net.SplitHostPort(h); err == nil {
		h = hp
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return "", netip.Addr{}, fmt.Errorf("certs: host %q has an ipv6 zone", host)
		}
		a = a.Unmap()
		return a.String(), a, nil
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if _, err := netip.ParseAddr(h); err == nil {
		// "1.2.3.4." would otherwise become the DNS name "1.2.3.4" and
		// share the IP literal's cache key with a leaf lacking its IP SAN.
		return "", netip.Addr{}, fmt.Errorf("certs: host %q is an ip address with a trailing dot", host)
	}
	if err := checkDNSName(h); err != nil {
		return "", netip.Addr{}, fmt.Errorf("certs: host %q: %w", host, err)
	}
	return h, netip.Addr{}, nil
}

// checkDNSName accepts a lower-case ASCII host name of labels of letters,
// digits, '-' and '_' (which some real hosts use).
func checkDNSName(h string) error {
	if h == "" {
		return errors.New("empty name")
	}
	if len(h) > 253 {
		return errors.New("name longer than 253 bytes")
	}
	for i := 0; i < len(h); i++ {
		if h[i] >= 0x80 {
			return errors.New("not ascii; pass an internationalised name in its xn-- form")
		}
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or over-long label")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q not allowed", c)
			}
		}
	}
	return nil
}

// TLSConfig returns a server configuration that presents, for each
// connection, a leaf for the server name the client sent (SNI). A client
// that sends none fails the handshake; the proxy, which knows the CONNECT
// authority, uses TLSConfigForHost instead. The caller may set NextProtos
// and other fields on the returned value, which is new on each call.
func (ca *CA) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName == "" {
				return nil, errors.New("certs: client sent no server name")
			}
			return ca.Leaf(hello.ServerName)
		},
	}
}

// TLSConfigForHost returns a server configuration that presents a leaf for
// host, the authority of the CONNECT request being intercepted (HARDENING
// 75). A client that sends a server name (SNI) other than host fails the
// handshake; one that sends none (as for an IP literal) gets the leaf for
// host. An invalid host fails every handshake with the error Leaf gives.
// The returned value is new on each call.
func (ca *CA) TLSConfigForHost(host string) *tls.Config {
	want, _, hostErr := normalizeHost(host)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hostErr != nil {
				return nil, hostErr
			}
			if hello.ServerName != "" {
				sni, _, err := normalizeHost(hello.ServerName)
				if err != nil || sni != want {
					return nil, fmt.Errorf("certs: server name %q does not match the connect host %q", hello.ServerName, want)
				}
			}
			return ca.Leaf(want)
		},
	}
}
