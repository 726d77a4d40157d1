package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestLoadCreatesCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config", "tbproxy")
	ca, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("dir mode %04o, want 0700", got)
	}
	if got := mode(t, filepath.Join(dir, KeyFile)); got != 0o600 {
		t.Errorf("key mode %04o, want 0600", got)
	}
	if got := mode(t, filepath.Join(dir, CertFile)); got != 0o644 {
		t.Errorf("cert mode %04o, want 0644", got)
	}
	if ca.Path() != filepath.Join(dir, CertFile) {
		t.Errorf("Path = %s", ca.Path())
	}
	onDisk, _ := os.ReadFile(ca.Path())
	if !bytes.Equal(onDisk, ca.CertPEM()) {
		t.Error("CertPEM differs from the file")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want 2 (temporary files left?)", len(entries))
	}

	c := ca.Certificate()
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: ca %v valid %v maxpath %d zero %v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage %v", c.KeyUsage)
	}
	if !strings.HasPrefix(c.Subject.CommonName, "tbproxy local CA ") || len(c.Subject.CommonName) <= len("tbproxy local CA ") {
		t.Errorf("common name %q", c.Subject.CommonName)
	}
	if d := c.NotAfter.Sub(c.NotBefore); d > 2*366*24*time.Hour {
		t.Errorf("validity %v exceeds two years", d)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 || c.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %v", c.SerialNumber)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve.Params().Name != "P-256" {
		t.Errorf("public key %T", c.PublicKey)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	keyPEM, _ := os.ReadFile(filepath.Join(dir, KeyFile))
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
		t.Error("key is not PEM PKCS#8")
	}
}

func TestReloadGivesSameCA(t *testing.T) {
	dir := t.TempDir()
	a, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.CertPEM(), b.CertPEM()) || !a.key.Equal(b.key) {
		t.Fatal("reload gave a different ca")
	}
}

func TestRotateAndRemove(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	a, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Rotate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.CertPEM(), b.CertPEM()) || a.key.Equal(b.key) {
		t.Fatal("rotate kept the ca")
	}
	if a.Certificate().Subject.CommonName == b.Certificate().Subject.CommonName {
		t.Error("rotated ca has the same name")
	}
	c, err := Load(dir)
	if err != nil || !bytes.Equal(c.CertPEM(), b.CertPEM()) {
		t.Fatalf("load after rotate: %v", err)
	}
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dir still there: %v", err)
	}
	if err := Remove(dir); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	// A directory shared with other files is kept.
	dir2 := t.TempDir()
	if _, err := Load(dir2); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir2, "config.toml"), nil, 0o600)
	if err := Remove(dir2); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir2); len(entries) != 1 {
		t.Fatalf("remove left %d entries", len(entries))
	}
}

func TestLoadRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"world-readable key", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, KeyFile), 0o644)
		}, "chmod 600"},
		{"group-readable key", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, KeyFile), 0o640)
		}, "chmod 600"},
		{"key is a symlink", func(t *testing.T, dir string) {
			k := filepath.Join(dir, KeyFile)
			os.Rename(k, k+".real")
			os.Symlink(k+".real", k)
		}, "not a regular file"},
		{"key missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, KeyFile))
		}, "tbproxy ca rotate"},
		{"key of another ca", func(t *testing.T, dir string) {
			other := t.TempDir()
			if _, err := Load(other); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(filepath.Join(other, KeyFile))
			os.WriteFile(filepath.Join(dir, KeyFile), data, 0o600)
		}, "does not match"},
		{"garbage cert", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, CertFile), []byte("hello"), 0o644)
		}, "no PEM certificate"},
		{"huge cert", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, CertFile), make([]byte, maxPEMSize+1), 0o644)
		}, "larger than"},
		{"fresh lone key", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, CertFile))
		}, "try again"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Load(dir); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, dir)
			ca, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "certs: ") {
				t.Fatalf("Load = %v, %v; want an error containing %q", ca, err, tc.want)
			}
		})
	}
}

func TestStaleLoneKeyReplaced(t *testing.T) {
	dir := t.TempDir()
	old, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, CertFile))
	later := time.Now().Add(2 * staleKeyAge)
	ca, err := Config{Now: func() time.Time { return later }}.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ca.key.Equal(old.key) {
		t.Fatal("stale key reused")
	}
}

func TestExpiredCARefused(t *testing.T) {
	dir := t.TempDir()
	past := time.Now().Add(-3 * 365 * 24 * time.Hour)
	if _, err := (Config{Now: func() time.Time { return past }}).create(dir, past, CAValidity); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "tbproxy ca rotate") {
		t.Fatalf("Load of an expired ca: %v", err)
	}
	if _, err := Rotate(dir); err != nil {
		t.Fatalf("rotate of an expired ca: %v", err)
	}
	if _, err := Load(dir); err != nil {
		t.Fatal(err)
	}
}

func TestNotYetValidCARefused(t *testing.T) {
	dir := t.TempDir()
	future := time.Now().Add(48 * time.Hour)
	if _, err := (Config{}).create(dir, future, CAValidity); err == nil {
		t.Fatal("create accepted a ca that is not valid yet")
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not valid before") {
		t.Fatalf("Load: %v", err)
	}
}

func newTestCA(t *testing.T, cfg Config) *CA {
	t.Helper()
	ca, err := cfg.Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func verify(t *testing.T, ca *CA, cert *tls.Certificate, name string, at time.Time) error {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

func TestLeafVerifies(t *testing.T) {
	ca := newTestCA(t, Config{})
	tests := []struct {
		host, verifyAs string
		dns            []string
		ips            []string
	}{
		{"example.com", "example.com", []string{"example.com"}, nil},
		{"WWW.Example.COM.:443", "www.example.com", []string{"www.example.com"}, nil},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", []string{"xn--bcher-kva.example"}, nil},
		{"127.0.0.1", "127.0.0.1", nil, []string{"127.0.0.1"}},
		{"10.1.2.3:8443", "10.1.2.3", nil, []string{"10.1.2.3"}},
		{"[2001:db8::1]:443", "2001:db8::1", nil, []string{"2001:db8::1"}},
		{"::ffff:192.0.2.1", "192.0.2.1", nil, []string{"192.0.2.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			cert, err := ca.Leaf(tc.host)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify(t, ca, cert, tc.verifyAs, time.Now()); err != nil {
				t.Fatalf("verify: %v", err)
			}
			l := cert.Leaf
			if strings.Join(l.DNSNames, ",") != strings.Join(tc.dns, ",") {
				t.Errorf("DNS SANs %v, want %v", l.DNSNames, tc.dns)
			}
			var ips []string
			for _, ip := range l.IPAddresses {
				ips = append(ips, ip.String())
			}
			if strings.Join(ips, ",") != strings.Join(tc.ips, ",") {
				t.Errorf("IP SANs %v, want %v", ips, tc.ips)
			}
			if d := l.NotAfter.Sub(l.NotBefore); d > 366*24*time.Hour {
				t.Errorf("leaf validity %v", d)
			}
			if l.NotAfter.After(ca.Certificate().NotAfter) || l.IsCA {
				t.Errorf("leaf outlives ca or is a ca")
			}
			if err := verify(t, ca, cert, "other.example", time.Now()); err == nil {
				t.Error("leaf verifies for another name")
			}
		})
	}
}

func TestLeafRefusesHosts(t *testing.T) {
	ca := newTestCA(t, Config{})
	for _, host := range []string{
		"", ":443", "bücher.example", "*.example.com", "a..b", "exa mple.com", "a\r\nb.com",
		"fe80::1%eth0", "[fe80::1%25eth0]:443", strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 130) + "com",
		"1.2.3.4.", "1.2.3.4.:443", "[::1.]:443", "2001:DB8::1.",
	} {
		if _, err := ca.Leaf(host); err == nil || !strings.HasPrefix(err.Error(), "certs: ") {
			t.Errorf("Leaf(%q) = %v", host, err)
		}
	}
}

func TestLeafCache(t *testing.T) {
	var mints atomic.Int32
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	ca := newTestCA(t, Config{CacheSize: 2, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	ca.onMint = func(string) { mints.Add(1) }

	a1, _ := ca.Leaf("a.example")
	a2, _ := ca.Leaf("A.example.:443")
	b, _ := ca.Leaf("b.example")
	if a1 != a2 || mints.Load() != 2 {
		t.Fatalf("same host minted twice (%d mints)", mints.Load())
	}
	if bytes.Equal(a1.Certificate[0], b.Certificate[0]) || a1.Leaf.SerialNumber.Cmp(b.Leaf.SerialNumber) == 0 {
		t.Fatal("different hosts share a certificate or serial")
	}
	if a1.PrivateKey.(*ecdsa.PrivateKey).Equal(b.PrivateKey) {
		t.Fatal("different hosts share a key")
	}
	// The cache is bounded: a third host evicts the least recently used.
	ca.Leaf("c.example")
	if ca.cache.Len() != 2 {
		t.Fatalf("cache holds %d", ca.cache.Len())
	}
	// A cached leaf is replaced well before it expires.
	clock.Store(now.Add(maxLeafCacheAge + time.Minute).UnixNano())
	before := mints.Load()
	a3, err := ca.Leaf("a.example")
	if err != nil || a3 == a1 || mints.Load() != before+1 {
		t.Fatalf("stale leaf reused: %v", err)
	}
	if err := verify(t, ca, a3, "a.example", time.Unix(0, clock.Load())); err != nil {
		t.Fatal(err)
	}
}

func TestLeafConcurrentMintsOnce(t *testing.T) {
	ca := newTestCA(t, Config{})
	var mints atomic.Int32
	release := make(chan struct{})
	ca.onMint = func(string) {
		mints.Add(1)
		<-release // hold the flight open while the others arrive
	}
	const n = 32
	var wg sync.WaitGroup
	certs := make([]*tls.Certificate, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			certs[i], errs[i] = ca.Leaf("same.example")
		}()
	}
	// Let the goroutines pile up on the flight, then release it.
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if mints.Load() != 1 {
		t.Fatalf("%d mints for one host", mints.Load())
	}
	for i := range n {
		if errs[i] != nil || certs[i] != certs[0] {
			t.Fatalf("call %d: %v", i, errs[i])
		}
	}
}

func TestLeafNeverOutlivesCA(t *testing.T) {
	dir := t.TempDir()
	// A CA made almost two years ago has about a month left.
	made := time.Now().Add(-CAValidity + 30*24*time.Hour)
	if _, err := (Config{Now: func() time.Time { return made }}).create(dir, made, CAValidity); err != nil {
		t.Fatal(err)
	}
	ca, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Leaf("a.example")
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Leaf.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Fatalf("leaf NotAfter %v, ca %v", cert.Leaf.NotAfter, ca.Certificate().NotAfter)
	}
	// Too close to the end, minting is refused.
	ca.now = func() time.Time { return ca.Certificate().NotAfter.Add(-time.Minute) }
	if _, err := ca.Leaf("b.example"); err == nil || !strings.Contains(err.Error(), "rotate") {
		t.Fatalf("minted at the end of the ca: %v", err)
	}
}

// TestKeysIndependent checks that keys come from crypto/rand, not from
// anything public: two CAs, and leaves for one host under each, all differ.
func TestKeysIndependent(t *testing.T) {
	a, b := newTestCA(t, Config{}), newTestCA(t, Config{})
	if a.key.Equal(b.key) || a.Certificate().SerialNumber.Cmp(b.Certificate().SerialNumber) == 0 {
		t.Fatal("two cas share a key or serial")
	}
	la, _ := a.Leaf("host.example")
	lb, _ := b.Leaf("host.example")
	if la.PrivateKey.(*ecdsa.PrivateKey).Equal(lb.PrivateKey) {
		t.Fatal("leaves for one host under two cas share a key")
	}
	if la.PrivateKey.(*ecdsa.PrivateKey).Equal(a.key) {
		t.Fatal("leaf reuses the ca key")
	}
}

func TestTLSConfigs(t *testing.T) {
	ca := newTestCA(t, Config{})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())

	handshake := func(t *testing.T, server *tls.Config, serverName string) (*x509.Certificate, error) {
		t.Helper()
		c1, c2 := net.Pipe()
		defer c1.Close()
		defer c2.Close()
		srv := tls.Server(c1, server)
		done := make(chan error, 1)
		go func() { done <- srv.Handshake() }()
		cli := tls.Client(c2, &tls.Config{RootCAs: pool, ServerName: serverName})
		err := cli.Handshake()
		if err != nil {
			c2.Close()
			<-done
			return nil, err
		}
		if err := <-done; err != nil {
			return nil, err
		}
		return cli.ConnectionState().PeerCertificates[0], nil
	}

	t.Run("sni", func(t *testing.T) {
		leaf, err := handshake(t, ca.TLSConfig(), "sni.example")
		if err != nil || leaf.DNSNames[0] != "sni.example" {
			t.Fatalf("handshake: %v", err)
		}
	})
	t.Run("sni missing", func(t *testing.T) {
		// An IP ServerName is not sent as SNI; TLSConfig cannot serve it.
		if _, err := handshake(t, ca.TLSConfig(), "127.0.0.1"); err == nil {
			t.Fatal("handshake without sni succeeded")
		}
	})
	t.Run("connect host", func(t *testing.T) {
		leaf, err := handshake(t, ca.TLSConfigForHost("host.example:443"), "host.example")
		if err != nil || leaf.DNSNames[0] != "host.example" {
			t.Fatalf("handshake: %v", err)
		}
	})
	t.Run("connect ip without sni", func(t *testing.T) {
		leaf, err := handshake(t, ca.TLSConfigForHost("127.0.0.1:443"), "127.0.0.1")
		if err != nil || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
			t.Fatalf("handshake: %v", err)
		}
	})
	t.Run("sni mismatch", func(t *testing.T) {
		if _, err := handshake(t, ca.TLSConfigForHost("host.example:443"), "other.example"); err == nil {
			t.Fatal("mismatched sni accepted")
		}
	})
	t.Run("bad connect host", func(t *testing.T) {
		if _, err := handshake(t, ca.TLSConfigForHost("bad host"), "bad"); err == nil {
			t.Fatal("bad host accepted")
		}
	})
}
