package origin

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"runtime"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// Defaults for the zero values of Config.
const (
	// DefaultMinSize is the smallest file published when Config.MinSize is 0.
	DefaultMinSize = 1 << 20
	// DefaultWait is how long a request waits for a hash in progress when
	// Config.Wait is 0.
	DefaultWait = 100 * time.Millisecond
	// CreatedBy is the "created by" of every generated torrent.
	CreatedBy = "tbproxy publish"
)

// maxQueue bounds the hash jobs waiting for a worker. A request that finds
// the queue full is served plainly and tries again next time.
const maxQueue = 1024

// Config configures a Publisher. Every zero field takes the default its
// comment gives.
type Config struct {
	// Dir is the directory published, for the directory mode: URL paths
	// resolve to files under it, through a DirResolver. Ignored when
	// Resolver is set; one of the two is required.
	Dir string
	// Resolver maps requests to files; nil means NewDirResolver(Dir). The
	// upstream mode passes its *Upstream.
	Resolver Resolver
	// DataDir holds the generated metainfo, one file per file version,
	// named by a hash of the version, never by the file's name. Empty
	// means nothing is persisted, and a restart hashes again.
	DataDir string
	// Announce is the tracker URL written into every torrent; empty writes
	// none, and clients rely on the url-list and their own peer sources.
	Announce string
	// PublicURL gives the resource's own absolute URL, for url-list. nil
	// means scheme, Host and path of the request; set it behind a TLS
	// terminator or when the Host header is not to be trusted. An empty
	// result writes no url-list.
	PublicURL func(r *http.Request) string
	// MinSize is the smallest file published, in bytes; 0 means
	// DefaultMinSize and a negative value publishes files of any size.
	MinSize int64
	// Include and Exclude are path.Match globs on the cleaned URL path.
	// A pattern without "/" matches the last element ("*.iso"); one with
	// "/" matches the whole path ("/pub/*/*.iso"). With Include empty every
	// path is included. Exclude wins.
	Include, Exclude []string
	// Workers is how many files are hashed at once, each on one
	// goroutine; 0 means GOMAXPROCS.
	Workers int
	// Seeder seeds the torrents that become ready and unseeds stale ones;
	// nil means metainfo is served but nothing is seeded.
	Seeder Seeder
	// Logger receives the publisher's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Wait is how long a request may wait for a hash in progress before
	// it is served plainly; 0 means DefaultWait and a negative value never
	// waits.
	Wait time.Duration
	// PlainIsFile says that the handler of the requests the Publisher
	// leaves alone serves a resolved file's bytes as they are on disk, with
	// the file's size and modification time (http.FileServer over Dir
	// does). The metainfo answers then say so (negotiate.SetPlainFile),
	// which spares a Transparent BitTorrent proxy a request to confirm the
	// file. Leave it false for a handler that serves something else, such
	// as an upstream server, whose file may change under it.
	PlainIsFile bool

	build buildFunc // hashes a file; nil means metainfo.Build (tests count calls)
}

// Seeder seeds published files. The wiring implements it with the swarm
// engine and a FileStorage per torrent, whose change callback calls
// Publisher.Invalidate.
//
// The Publisher calls it from one goroutine of its own, in order, so a
// Seed and the Unseed of the same info-hash never race. Calls must not call
// back into the Publisher synchronously except for Invalidate.
type Seeder interface {
	// Seed starts seeding m from files, one per file of m.Info.Files in
	// torrent order (a published torrent has exactly one). m has no
	// url-list, since that depends on the request, and must not be
	// modified. A failure is logged; the metainfo is still served, and
	// clients can use the url-list. A failure wrapping ErrChanged (as
	// NewFileStorage returns for a file that changed since its hash) makes
	// the Publisher re-check the version, as Invalidate does.
	Seed(m *metainfo.MetaInfo, files []Resource) error
	// Unseed stops seeding ih. It is called when the file changed or
	// vanished; an unknown ih is not an error.
	Unseed(ih metainfo.Hash)
}

// Resource is one version of a published file: what a Resolver found behind
// a request. Its fields are its identity: a change to any of them is a new
// version with a new torrent. Changed and Inode may be left zero (a
// Resolver without them): then the other four are the identity.
type Resource struct {
	// Key names the resource across versions: the cleaned URL path.
	Key string
	// Path is the absolute path of the regular file holding its bytes,
	// symbolic links resolved.
	Path string
	// Size is the file's length in bytes.
	Size int64
	// ModTime is the file's modification time.
	ModTime time.Time
	// Changed and Inode are the file's status change time and inode
	// number, where the system has them (zero otherwise): a file rewritten
	// with its size and modification time kept (cp -p, rsync -a, touch
	// -r) is another version all the same.
	Changed time.Time
	Inode   uint64
}

// Resolver maps requests to files. A DirResolver and an Upstream implement
// it. Its methods are called from many goroutines at once.
type Resolver interface {
	// Resolve finds the file behind r, a GET or HEAD. fetch reports that
	// the client asked for a torrent, so a resolver that does not hold the
	// file yet may start getting it. ok is false when there is no
	// publishable file (yet); then r is served plainly.
	Resolve(r *http.Request, fetch bool) (res Resource, ok bool)
	// Check reports whether res is still current: the same file, with the
	// same size and modification time (and status change time and inode,
	// where res has them), still publishable. It is asked
	// about versions loaded from the data directory and about torrents
	// whose storage saw a change.
	Check(res Resource) bool
}

// Published describes one torrent the Publisher has ready.
type Published struct {
	Resource
	InfoHash    metainfo.Hash
	PieceLength int64
	Pieces      int
	// Ready is when the torrent became ready: hashed, or loaded from the
	// data directory.
	Ready time.Time
}

// Sentinel errors.
var (
	// ErrClosed is returned by a Publisher, Upstream or FileStorage used
	// after Close.
	ErrClosed = errors.New("origin: closed")
	// ErrChanged is returned by a FileStorage whose file no longer has the
	// size and modification time it was hashed with. Its bytes are never
	// served again.
	ErrChanged = errors.New("origin: published file changed")
	// ErrReadOnly is returned by FileStorage.WritePiece: a published file
	// is complete and is never written.
	ErrReadOnly = errors.New("origin: file storage is read-only")
)

// settings is a Config with its defaults applied.
type settings struct {
	Config
	minSize int64
	wait    time.Duration
}

func (c Config) withDefaults() (settings, error) {
	s := settings{Config: c, minSize: c.MinSize, wait: c.Wait}
	switch {
	case s.minSize == 0:
		s.minSize = DefaultMinSize
	case s.minSize < 0:
		s.minSize = 0
	}
	switch {
	case s.wait == 0:
		s.wait = DefaultWait
	case s.wait < 0:
		s.wait = 0
	}
	if s.Workers <= 0 {
		s.Workers = runtime.GOMAXPROCS(0)
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.PublicURL == nil {
		s.PublicURL = requestURL
	}
	for _, p := range append(append([]string(nil), s.Include...), s.Exclude...) {
		if _, err := path.Match(p, ""); err != nil {
			return s, fmt.Errorf("origin: glob %q: %w", p, err)
		}
	}
	return s, nil
}

// requestURL is the default PublicURL: scheme, Host and path of r, without
// the query, which http.FileServer ignores.
func requestURL(r *http.Request) string {
	if r.Host == "" {
		return ""
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u := r.URL
	return scheme + "://" + r.Host + u.EscapedPath()
}
