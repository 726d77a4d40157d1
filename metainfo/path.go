package metainfo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxPathComponent is the longest path component SafePath returns, in bytes.
// Most file systems allow 255; the margin leaves room for a suffix such as ".part".
const MaxPathComponent = 240

// safePathMaxExt is the longest extension (dot included) that SafePath keeps
// when it truncates a component; a longer "extension" is just part of the name.
const safePathMaxExt = 16

// ErrUnsafePath is matched (errors.Is) by every *PathError.
var ErrUnsafePath = errors.New("metainfo: unsafe file path")

// ErrDuplicatePath is wrapped by the error CheckUnique returns.
var ErrDuplicatePath = errors.New("metainfo: duplicate file path")

// PathError reports a file path from a torrent that cannot be made safe.
type PathError struct {
	// Path holds the offending components as the torrent gave them.
	Path []string
	// Reason says what is wrong, in lower case.
	Reason string
}

// Error quotes the path, so control and bidi characters from the torrent never
// reach a log raw, and shortens it when it is long.
func (e *PathError) Error() string {
	const maxShown = 200
	shown := strconv.Quote(strings.Join(e.Path, "/"))
	if len(shown) > maxShown {
		shown = shown[:maxShown] + "…"
	}
	return "metainfo: unsafe file path " + shown + ": " + e.Reason
}

// Unwrap returns ErrUnsafePath, so that errors.Is(err, ErrUnsafePath) holds.
func (e *PathError) Unwrap() error { return ErrUnsafePath }

// SafePath turns the path components of one torrent file (a multi-file
// torrent's "path" list, or [name]) into a slash-separated relative path that
// is safe to create under a root on any OS. Convert it with filepath.FromSlash.
//
// It rejects (with a *PathError): an empty list; a ".." component; a component
// that holds "/" or "\" (which covers "/abs", "\\server\share" and "a/../b");
// a component that starts with a drive letter ("C:"); and control characters
// (C0, DEL, C1, including newline). It rewrites, with "_":
//   - an empty or "." component (the whole component becomes "_");
//   - invalid UTF-8 bytes, one "_" each;
//   - the characters < > : " | ? * that Windows forbids;
//   - bidi controls and zero-width characters (U+061C, U+200B-U+200F,
//     U+2028-U+2029, U+202A-U+202E, U+2066-U+2069, U+FEFF);
//   - each trailing dot or space ("name." becomes "name_").
//
// A Windows device name (CON, PRN, AUX, NUL, COM0-9, LPT0-9, CONIN$, CONOUT$,
// also with an extension) gets "_" after its base: "con" becomes "con_",
// "nul.txt" becomes "nul_.txt". A component longer than MaxPathComponent bytes is
// cut to that length on a UTF-8 boundary, keeping an extension of up to 16 bytes.
// SafePath is idempotent: applied to the components of its own result, it
// returns that result unchanged.
func SafePath(components []string) (string, error) {
	if len(components) == 0 {
		return "", &PathError{Reason: "empty path"}
	}
	var b strings.Builder
	for i, c := range components {
		sc, reason := safePathComponent(c)
		if reason != "" {
			return "", &PathError{Path: append([]string(nil), components...), Reason: reason}
		}
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(sc)
	}
	return b.String(), nil
}

// safePathComponent sanitises one component, or says why it cannot.
func safePathComponent(c string) (string, string) {
	switch {
	case c == "..":
		return "", "parent directory component \"..\""
	case strings.HasPrefix(c, "/") || strings.HasPrefix(c, `\`):
		return "", "absolute path"
	case strings.ContainsAny(c, `/\`):
		return "", "component contains a path separator"
	case len(c) >= 2 && c[1] == ':' && ('a' <= c[0] && c[0] <= 'z' || 'A' <= c[0] && c[0] <= 'Z'):
		return "", "component starts with a drive letter"
	case c == "" || c == ".":
		return "_", ""
	}

	// Map characters. The result is valid UTF-8 from here on.
	var b strings.Builder
	b.Grow(len(c))
	for i := 0; i < len(c); {
		r, size := utf8.DecodeRuneInString(c[i:])
		i += size
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteByte('_')
		case unicode.IsControl(r):
			return "", "control character " + strconv.QuoteRune(r)
		case strings.ContainsRune(`<>:"|?*`, r), safePathInvisible(r):
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	s := b.String()

	// Device names first: the "_" they add may then be cut by the truncation,
	// which never reaches back into a base this short.
	s = safePathDevice(s)
	s = safePathTruncate(s)

	// Windows drops trailing dots and spaces, which would make "a." and "a"
	// collide; replace them instead of stripping so the name never empties.
	end := len(s)
	for end > 0 && (s[end-1] == '.' || s[end-1] == ' ') {
		end--
	}
	if end < len(s) {
		s = s[:end] + strings.Repeat("_", len(s)-end)
	}
	return s, ""
}

// safePathInvisible reports the bidi controls and zero-width characters that
// make a name display differently from what it is ("evil\u202Egpj.exe").
func safePathInvisible(r rune) bool {
	switch {
	case r == 0x061C, r == 0xFEFF:
		return true
	case 0x200B <= r && r <= 0x200F:
		return true
	case 0x2028 <= r && r <= 0x202E:
		return true
	case 0x2066 <= r && r <= 0x2069:
		return true
	}
	return false
}

// safePathDevice appends "_" to the base of a Windows device name. The base is
// the part before the first dot with trailing spaces ignored, as Windows
// compares it; "nul .txt" is a device too.
func safePathDevice(s string) string {
	base := s
	if i := strings.IndexByte(s, '.'); i >= 0 {
		base = s[:i]
	}
	base = strings.TrimRight(base, " ")
	if !safePathIsDevice(base) {
		return s
	}
	return s[:len(base)] + "_" + s[len(base):]
}

// safePathIsDevice reports whether base names a Windows device, in any case.
func safePathIsDevice(base string) bool {
	switch strings.ToUpper(base) {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	if len(base) < 4 {
		return false
	}
	switch strings.ToUpper(base[:3]) {
	case "COM", "LPT":
	default:
		return false
	}
	switch base[3:] {
	case "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "¹", "²", "³":
		return true
	}
	return false
}

// safePathTruncate cuts s to MaxPathComponent bytes on a rune boundary,
// keeping a short extension. s must be valid UTF-8.
func safePathTruncate(s string) string {
	if len(s) <= MaxPathComponent {
		return s
	}
	stem, ext := s, ""
	if i := strings.LastIndexByte(s, '.'); i > 0 && len(s)-i <= safePathMaxExt {
		stem, ext = s[:i], s[i:]
	}
	n := MaxPathComponent - len(ext)
	for n > 0 && !utf8.RuneStart(stem[n]) {
		n--
	}
	return stem[:n] + ext
}

// CheckUnique reports the first of paths (safe, slash-separated, as SafePath
// returns them) that collides with an earlier one: the same path, the same path
// in another letter case (Unicode simple case folding, as case-insensitive file
// systems compare), or a file that is also a directory of another file ("a"
// and "a/b"). The error wraps ErrDuplicatePath. It runs in time linear in the
// total length of paths. Unicode normalisation (NFC against NFD) is not
// compared.
func CheckUnique(paths []string) error {
	// A trie of folded components: each node is a directory or a file, and
	// remembers the index of the path that created it.
	type edge struct {
		parent int
		name   string
	}
	type node struct {
		file  bool
		owner int
	}
	children := make(map[edge]int, len(paths))
	nodes := make([]node, 1, len(paths)+1) // node 0 is the root
	for i, p := range paths {
		at := 0
		rest := p
		for {
			name, more, isDir := strings.Cut(rest, "/")
			key := edge{at, checkUniqueFold(name)}
			next, exists := children[key]
			switch {
			case !exists:
				next = len(nodes)
				nodes = append(nodes, node{file: !isDir, owner: i})
				children[key] = next
			case nodes[next].file && isDir:
				return fmt.Errorf("%w: %q is a file, so %q cannot be below it",
					ErrDuplicatePath, paths[nodes[next].owner], p)
			case nodes[next].file && paths[nodes[next].owner] == p:
				return fmt.Errorf("%w: %q appears twice", ErrDuplicatePath, p)
			case nodes[next].file:
				return fmt.Errorf("%w: %q and %q differ only in letter case",
					ErrDuplicatePath, paths[nodes[next].owner], p)
			case !isDir:
				return fmt.Errorf("%w: %q is a file, but %q makes it a directory",
					ErrDuplicatePath, p, paths[nodes[next].owner])
			}
			if !isDir {
				break
			}
			at, rest = next, more
		}
	}
	return nil
}

// checkUniqueFold maps s to a key that is equal for strings equal under
// Unicode simple case folding (as strings.EqualFold). Invalid UTF-8 bytes are
// kept as they are, so distinct invalid names stay distinct.
func checkUniqueFold(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		// Every case orbit that holds an ASCII letter has the upper-case
		// letter as its smallest member, which the general loop below picks.
		return strings.ToUpper(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteByte(s[i])
			i++
			continue
		}
		i += size
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// WithinRoot joins root and rel (a SafePath result, converted with
// filepath.FromSlash) and returns the absolute joined path after checking that
// it stays strictly inside root: lexically with filepath.Rel, and then through
// symlinks, by resolving the deepest part of the joined path that already
// exists (the file itself included) and comparing it with the resolved root. A
// dangling symlink on the way is rejected, since creating a file through it
// would write wherever it points. Root itself may be a symlink. The check
// cannot stop a link created after it returns; the cache owns its directory.
func WithinRoot(root, rel string) (string, error) {
	relOS := filepath.FromSlash(rel)
	if filepath.IsAbs(relOS) || filepath.VolumeName(relOS) != "" || strings.HasPrefix(relOS, string(filepath.Separator)) {
		return "", &PathError{Path: []string{rel}, Reason: "absolute path"}
	}
	absRoot, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("metainfo: resolving root %q: %w", root, err)
	}
	joined := filepath.Join(absRoot, relOS)
	if joined == absRoot {
		return "", &PathError{Path: []string{rel}, Reason: "names the root directory itself"}
	}
	if !safePathInside(absRoot, joined, false) {
		return "", &PathError{Path: []string{rel}, Reason: "escapes the root directory"}
	}

	realRoot, err := filepath.EvalSymlinks(absRoot)
	if errors.Is(err, os.ErrNotExist) {
		return joined, nil // nothing below a missing root can be a link yet
	}
	if err != nil {
		return "", fmt.Errorf("metainfo: resolving root %q: %w", root, err)
	}
	for p := joined; p != absRoot && p != filepath.Dir(p); p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err != nil {
			continue // not there (or not reachable): look at its parent
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			// A dangling or looping link, or an unreadable directory.
			return "", &PathError{Path: []string{rel}, Reason: "cannot resolve symlinks (" + err.Error() + ")"}
		}
		if !safePathInside(realRoot, real, true) {
			return "", &PathError{Path: []string{rel}, Reason: "a symlink leads outside the root directory"}
		}
		break
	}
	return joined, nil
}

// safePathInside reports whether target is below root (or equal to it, when
// orEqual). Both must be clean absolute paths.
func safePathInside(root, target string, orEqual bool) bool {
	r, err := filepath.Rel(root, target)
	if err != nil {
		return false
	}
	if r == "." {
		return orEqual
	}
	return r != ".." && !strings.HasPrefix(r, ".."+string(filepath.Separator)) && !filepath.IsAbs(r)
}
