// Package certs manages tbproxy's per-install certificate authority for
// intercepting HTTPS (MITM, off unless the user enables it): it creates,
// loads, rotates and removes the CA key pair on disk, and mints short-lived
// leaf certificates for the hosts the proxy intercepts, caching them in a
// bounded LRU.
//
// The CA is generated on each install from crypto/rand and never shared,
// embedded or taken from a library (HARDENING 72-73, section (c) 4). The
// package does not install the CA into any trust store, does not dial
// upstream servers and does not decide which hosts to intercept: the proxy
// and the command line do.
package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// File names inside the CA directory.
const (
	// CertFile holds the CA certificate, PEM, mode 0644: this is what a
	// user installs into a trust store.
	CertFile = "ca.pem"
	// KeyFile holds the CA private key, PEM PKCS#8, mode 0600.
	KeyFile = "ca-key.pem"
)

// Validity periods.
const (
	// CAValidity is how long a new CA certificate is valid.
	CAValidity = 2 * 365 * 24 * time.Hour
	// LeafValidity is the longest a leaf certificate is valid; a leaf
	// never outlives its CA.
	LeafValidity = 365 * 24 * time.Hour
	// DefaultCacheSize is the number of leaves cached when
	// Config.CacheSize is 0.
	DefaultCacheSize = 1024
	// backdate moves NotBefore into the past to absorb clock skew
	// between the proxy and its clients.
	backdate = time.Hour
	// minLeafLife is the shortest validity worth minting; a CA closer
	// than this to its expiry must be rotated.
	minLeafLife = time.Hour
	// maxPEMSize bounds what is read from either CA file.
	maxPEMSize = 64 << 10
	// staleKeyAge is how old a lone key file (a creation interrupted
	// before the certificate was written) must be before it is replaced.
	staleKeyAge = time.Minute
)

// Config tunes how a CA is created, loaded and used. The zero value uses
// the defaults.
type Config struct {
	// CacheSize is the most leaf certificates kept in memory; 0 means
	// DefaultCacheSize.
	CacheSize int
	// Now is the clock for validity checks and leaf periods; nil means
	// time.Now.
	Now func() time.Time
}

// CA is a loaded certificate authority that mints leaf certificates. It is
// safe for concurrent use.
type CA struct {
	dir     string            // where CertFile and KeyFile live; immutable
	cert    *x509.Certificate // parsed CA certificate; immutable
	certPEM []byte            // the bytes of CertFile; immutable
	key     *ecdsa.PrivateKey // the CA key; immutable, never logged
	now     func() time.Time  // the clock, from Config.Now

	// cache maps a normalised host to its leaf. It locks internally.
	cache *lru.Cache[string, leaf]
	// mints collapses concurrent mints for one host into one.
	mints singleflight.Group
	// onMint, when set (by tests), is called before each leaf is minted.
	onMint func(host string)
}

// Load returns the CA stored in dir, creating dir (mode 0700) and a new CA
// when neither CA file exists. See Config.Load.
func Load(dir string) (*CA, error) { return Config{}.Load(dir) }

// Rotate replaces the CA in dir with a new one. See Config.Rotate.
func Rotate(dir string) (*CA, error) { return Config{}.Rotate(dir) }

// Load returns the CA stored in dir, creating dir (mode 0700) and a new CA
// when neither file exists: CertFile (0644) and KeyFile (0600).
//
// Loading refuses a key file that is not a regular file or that group or
// others may read or write (chmod 600 fixes it), a certificate without its
// key, a key that does not match the certificate, a certificate that is
// not an ECDSA P-256 CA allowed to sign certificates, and a certificate
// outside its validity period (an expired CA must be rotated with
// "tbproxy ca rotate"). A key file without a certificate, left by an
// interrupted creation, is replaced once it is more than a minute old.
func (c Config) Load(dir string) (*CA, error) {
	now := c.clock()
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	_, certErr := os.Lstat(certPath)
	keyInfo, keyErr := os.Lstat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return c.load(dir)
	case certErr == nil && errors.Is(keyErr, fs.ErrNotExist):
		return nil, fmt.Errorf("certs: %s exists but %s is missing; run \"tbproxy ca rotate\" to make a new ca", certPath, keyPath)
	case errors.Is(certErr, fs.ErrNotExist) && keyErr == nil:
		if now().Sub(keyInfo.ModTime()) < staleKeyAge {
			return nil, fmt.Errorf("certs: %s exists without %s; another tbproxy may be creating the ca, try again", keyPath, certPath)
		}
		if err := os.Remove(keyPath); err != nil {
			return nil, fmt.Errorf("certs: removing stale ca key: %w", err)
		}
		return c.create(dir, now(), CAValidity)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return c.create(dir, now(), CAValidity)
	case certErr != nil:
		return nil, fmt.Errorf("certs: %w", certErr)
	default:
		return nil, fmt.Errorf("certs: %w", keyErr)
	}
}

// Rotate removes the CA in dir and creates a new one. Leaves signed by the
// old CA stop being trusted once the new certificate replaces the old one
// in the trust store.
func (c Config) Rotate(dir string) (*CA, error) {
	if err := Remove(dir); err != nil {
		return nil, err
	}
	return c.create(dir, c.clock()(), CAValidity)
}

// Remove deletes the CA files from dir, and dir itself when it is then
// empty. Missing files are not an error. It does not remove the CA from
// any trust store.
func Remove(dir string) error {
	for _, name := range []string{KeyFile, CertFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("certs: removing ca: %w", err)
		}
	}
	_ = os.Remove(dir) // fails, harmlessly, unless dir is empty
	return nil
}

func (c Config) clock() func() time.Time {
	if c.Now != nil {
		return c.Now
	}
	return time.Now
}

// create makes a new CA valid from now-backdate for validity and writes it
// to dir without replacing existing files.
func (c Config) create(dir string, now time.Time, validity time.Duration) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: creating ca directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generating ca key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	var suffix [4]byte
	if _, err := io.ReadFull(rand.Reader, suffix[:]); err != nil {
		return nil, fmt.Errorf("certs: generating ca name: %w", err)
	}
	notBefore := now.Add(-backdate)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   "tbproxy local CA " + hex.EncodeToString(suffix[:]),
			Organization: []string{"tbproxy"},
		},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("certs: signing ca certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: encoding ca key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	// The key goes first and the certificate last, so that a certificate
	// on disk always has its key; neither replaces an existing file.
	if err := writeNew(dir, KeyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(dir, CertFile, certPEM, 0o644); err != nil {
		_ = os.Remove(filepath.Join(dir, KeyFile))
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parsing new ca certificate: %w", err)
	}
	return c.newCA(dir, cert, certPEM, key)
}

// writeNew writes data to dir/name with mode perm, through a temporary
// file linked into place, so the file appears whole and an existing one is
// never replaced.
func writeNew(dir, name string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("certs: writing %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm) // exact mode, whatever the umask
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		return fmt.Errorf("certs: writing %s: %w", name, err)
	}
	return nil
}

// load reads and checks the CA files in dir.
func (c Config) load(dir string) (*CA, error) {
	keyPath := filepath.Join(dir, KeyFile)
	if err := checkKeyMode(keyPath); err != nil {
		return nil, err
	}
	certPEM, err := readSmall(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := readSmall(keyPath)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("certs: %s holds no PEM certificate", CertFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: parsing %s: %w", CertFile, err)
	}
	kblock, _ := pem.Decode(keyPEM)
	if kblock == nil || kblock.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("certs: %s holds no PEM PKCS#8 private key", KeyFile)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(kblock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: parsing %s: %w", KeyFile, err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("certs: %s is not an ecdsa p-256 key", KeyFile)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("certs: %s does not match %s; run \"tbproxy ca rotate\"", KeyFile, CertFile)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("certs: %s is not a certificate authority", CertFile)
	}
	return c.newCA(dir, cert, bytes.Clone(certPEM), key)
}

// checkKeyMode refuses a key file that is not a regular file or that
// group or others can access.
func checkKeyMode(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("certs: %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("certs: ca key %s is accessible to group or others (mode %04o); run \"chmod 600 %s\"",
			path, fi.Mode().Perm(), path)
	}
	return nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMSize+1))
	if err != nil {
		return nil, fmt.Errorf("certs: reading %s: %w", filepath.Base(path), err)
	}
	if len(data) > maxPEMSize {
		return nil, fmt.Errorf("certs: %s is larger than %d bytes", filepath.Base(path), maxPEMSize)
	}
	return data, nil
}

// newCA checks the validity period of cert and sets up the leaf cache.
func (c Config) newCA(dir string, cert *x509.Certificate, certPEM []byte, key *ecdsa.PrivateKey) (*CA, error) {
	now := c.clock()
	t := now()
	if t.Before(cert.NotBefore) {
		return nil, fmt.Errorf("certs: ca certificate is not valid before %s; check the system clock", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if !t.Add(minLeafLife).Before(cert.NotAfter) {
		return nil, fmt.Errorf("certs: ca certificate expired on %s; run \"tbproxy ca rotate\" and install the new ca",
			cert.NotAfter.UTC().Format(time.RFC3339))
	}
	size := c.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	cache, err := lru.New[string, leaf](size)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return &CA{dir: dir, cert: cert, certPEM: certPEM, key: key, now: now, cache: cache}, nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("certs: generating serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// CertPEM returns a copy of the CA certificate in PEM form, to install in a
// trust store or serve for download.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Certificate returns the parsed CA certificate. The caller must not
// modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Path is the file name of the CA certificate (CertFile in the CA's
// directory), for "tbproxy ca path".
func (ca *CA) Path() string { return filepath.Join(ca.dir, CertFile) }
