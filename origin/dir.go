package origin

import (
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/tbproxy/tbproxy/negotiate"
)

// DirResolver maps URL paths to regular files under a directory, as
// http.FileServer(http.Dir(dir)) does, and refuses anything that would leave
// the directory: a path with a ".." element, and a symbolic link that
// resolves outside it.
type DirResolver struct {
	root string // absolute, symbolic links resolved; immutable
}

// NewDirResolver returns a DirResolver for dir, which must be a directory.
func NewDirResolver(dir string) (*DirResolver, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("origin: dir: %w", err)
	}
	root, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("origin: dir: %w", err)
	}
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("origin: dir: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("origin: dir: %s is not a directory", dir)
	}
	return &DirResolver{root: root}, nil
}

// Root is the published directory, absolute and with symbolic links
// resolved.
func (d *DirResolver) Root() string { return d.root }

// Resolve implements Resolver. It never fetches; fetch is ignored.
func (d *DirResolver) Resolve(r *http.Request, fetch bool) (Resource, bool) {
	key, ok := cleanKey(r.URL.Path)
	if !ok {
		return Resource{}, false
	}
	return d.resolve(key)
}

// Check implements Resolver: res.Key must still resolve to res.Path, with
// the same size and modification time.
func (d *DirResolver) Check(res Resource) bool {
	if key, ok := cleanKey(res.Key); !ok || key != res.Key {
		return false
	}
	cur, ok := d.resolve(res.Key)
	return ok && cur.Path == res.Path && sameVersion(cur, res)
}

func (d *DirResolver) resolve(key string) (Resource, bool) {
	if filepath.Separator != '/' && strings.ContainsRune(key, filepath.Separator) {
		return Resource{}, false
	}
	// The root has no symbolic links, so only the elements below it are
	// looked at: one lstat each, and EvalSymlinks only when a link is met.
	cur := d.root
	elems := strings.Split(key[1:], "/")
	for i, e := range elems {
		cur += string(filepath.Separator) + e
		st, err := os.Lstat(cur)
		switch {
		case err != nil:
			return Resource{}, false
		case st.Mode()&os.ModeSymlink != 0:
			return d.resolveLinks(key)
		case i < len(elems)-1 && !st.IsDir():
			return Resource{}, false
		case i == len(elems)-1 && st.Mode().IsRegular():
			return fileResource(key, cur, st), true
		}
	}
	return Resource{}, false
}

// resolveLinks resolves key through symbolic links, and refuses a file
// whose real path is not inside the root.
func (d *DirResolver) resolveLinks(key string) (Resource, bool) {
	real, err := filepath.EvalSymlinks(filepath.Join(d.root, filepath.FromSlash(key[1:])))
	if err != nil {
		return Resource{}, false
	}
	if r, err := filepath.Rel(d.root, real); err != nil || r == "." || !filepath.IsLocal(r) {
		return Resource{}, false
	}
	st, err := os.Stat(real)
	if err != nil || !st.Mode().IsRegular() {
		return Resource{}, false
	}
	return fileResource(key, real, st), true
}

// fileResource is the Resource of the file at path, which st describes.
func fileResource(key, path string, st os.FileInfo) Resource {
	res := Resource{Key: key, Path: path, Size: st.Size(), ModTime: st.ModTime()}
	res.Changed, res.Inode = statIdentity(st)
	return res
}

// isVersion reports whether st describes the version of the file that res
// names. Changed and Inode count where res has them: a Resolver may leave
// them zero.
func isVersion(st os.FileInfo, res Resource) bool {
	if !st.Mode().IsRegular() {
		return false
	}
	cur := fileResource(res.Key, res.Path, st)
	if res.Changed.IsZero() {
		cur.Changed = time.Time{}
	}
	if res.Inode == 0 {
		cur.Inode = 0
	}
	return sameVersion(cur, res)
}

// sizeAndTime reports whether st describes a regular file of res's size
// and modification time.
func sizeAndTime(st os.FileInfo, res Resource) bool {
	return st.Mode().IsRegular() && st.Size() == res.Size && st.ModTime().Equal(res.ModTime)
}

// cleanKey turns a URL path into a resource key: the path cleaned, or not ok
// for a path that http.FileServer would not serve as a file: one that is
// not absolute, holds a ".." element or a NUL, names a directory (a trailing
// "/"), or ends in "/index.html", which http.FileServer redirects.
func cleanKey(p string) (string, bool) {
	if p == "" || p[0] != '/' || strings.HasSuffix(p, "/") || strings.IndexByte(p, 0) >= 0 {
		return "", false
	}
	for e := range strings.SplitSeq(p, "/") {
		if e == ".." {
			return "", false
		}
	}
	for e := range strings.SplitSeq(p, "\\") {
		if e == ".." {
			return "", false
		}
	}
	key := path.Clean(p)
	if key == "/" || strings.HasSuffix(key, "/index.html") {
		return "", false
	}
	return key, true
}

// sameVersion reports whether a and b name the same version of a file:
// the same size, modification and status change times, and inode.
func sameVersion(a, b Resource) bool {
	return a.Size == b.Size && a.ModTime.Equal(b.ModTime) && a.Changed.Equal(b.Changed) && a.Inode == b.Inode
}

// FileServer is http.FileServer(fs) with the Range of a request for a
// regular file read as RFC 9110 means it (negotiate.ServeRange): a unit
// in capitals and positions too large for an int64 are served, "-0" is
// not satisfiable (416), and a malformed Range, or one of too many or too
// much overlapping ranges, is ignored (200, HARDENING 61). http.FileServer
// alone answers a malformed Range with 416, "-0" with a 206 of no bytes,
// and any number of ranges with as many parts.
func FileServer(fs http.FileSystem) http.Handler {
	files := http.FileServer(fs)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.Header.Values("Range")) > 0 {
			if size, ok := regularSize(fs, r.URL.Path); ok {
				r = r.Clone(r.Context())
				negotiate.ServeRange(r.Header, size)
			}
		}
		files.ServeHTTP(w, r)
	})
}

// regularSize is the size of the regular file that fs serves for the URL
// path p, as http.FileServer names it.
func regularSize(fs http.FileSystem, p string) (int64, bool) {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	f, err := fs.Open(path.Clean(p))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return 0, false
	}
	return st.Size(), true
}
