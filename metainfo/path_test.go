package metainfo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestSafePath(t *testing.T) {
	long := strings.Repeat("x", 10<<10)
	tests := []struct {
		name string
		in   []string
		want string // "" means an error is expected
	}{
		{name: "plain", in: []string{"dir", "file.txt"}, want: "dir/file.txt"},
		{name: "single name", in: []string{"movie.mkv"}, want: "movie.mkv"},
		{name: "unicode kept", in: []string{"données", "日本語.txt"}, want: "données/日本語.txt"},
		{name: "empty list", in: []string{}},
		{name: "nil list", in: nil},
		{name: "parent traversal", in: []string{"..", "..", "etc", "passwd"}},
		{name: "parent in the middle", in: []string{"a", "..", "b"}},
		{name: "absolute unix", in: []string{"/etc/passwd"}},
		{name: "embedded traversal", in: []string{"a/../../b"}},
		{name: "separator inside", in: []string{"a/b"}},
		{name: "backslash inside", in: []string{`a\b`}},
		{name: "drive letter", in: []string{`C:\x`}},
		{name: "bare drive", in: []string{"C:", "x"}},
		{name: "drive relative", in: []string{"dir", "c:x"}},
		{name: "UNC", in: []string{`\\server\share`}},
		{name: "newline", in: []string{"bad\nname"}},
		{name: "carriage return", in: []string{"bad\rname"}},
		{name: "NUL byte", in: []string{"a\x00b"}},
		{name: "DEL", in: []string{"a\x7fb"}},
		{name: "C1 control", in: []string{"a\u0085b"}},
		{name: "all empty components", in: []string{"", ""}, want: "_/_"},
		{name: "dot component", in: []string{"."}, want: "_"},
		{name: "dot in the middle", in: []string{"a", ".", "b"}, want: "a/_/b"},
		{name: "triple dot", in: []string{"..."}, want: "___"},
		{name: "10 KB component", in: []string{long}, want: long[:MaxPathComponent]},
		{name: "10 KB component keeps extension", in: []string{long + ".mkv"}, want: long[:MaxPathComponent-4] + ".mkv"},
		{name: "long extension not kept", in: []string{"a." + long}, want: ("a." + long)[:MaxPathComponent]},
		{name: "truncation on a rune boundary", in: []string{"a" + strings.Repeat("é", 200)}, want: "a" + strings.Repeat("é", 119)},
		{name: "truncation then trailing dot", in: []string{strings.Repeat("x", 239) + ".y" + long}, want: strings.Repeat("x", 239) + "_"},
		{name: "CON", in: []string{"CON"}, want: "CON_"},
		{name: "con lower-case", in: []string{"con"}, want: "con_"},
		{name: "nul.txt", in: []string{"nul.txt"}, want: "nul_.txt"},
		{name: "nul with two extensions", in: []string{"NuL.tar.gz"}, want: "NuL_.tar.gz"},
		{name: "device with space before dot", in: []string{"aux .c"}, want: "aux_ .c"},
		{name: "LPT9", in: []string{"dir", "LPT9"}, want: "dir/LPT9_"},
		{name: "COM superscript", in: []string{"COM¹.txt"}, want: "COM¹_.txt"},
		{name: "CONIN$", in: []string{"conin$"}, want: "conin$_"},
		{name: "not a device", in: []string{"CONSOLE", "COM10", "lpt", "nul_"}, want: "CONSOLE/COM10/lpt/nul_"},
		{name: "device with trailing dot", in: []string{"con."}, want: "con__"},
		{name: "bidi override", in: []string{"evil\u202Egpj.exe"}, want: "evil_gpj.exe"},
		{name: "zero width and BOM", in: []string{"a\u200Bb\uFEFFc\u2066d"}, want: "a_b_c_d"},
		{name: "invalid UTF-8", in: []string{"a\xffb\xc3"}, want: "a_b_"},
		{name: "overlong UTF-8 slash", in: []string{"a\xc0\xafb"}, want: "a__b"},
		{name: "trailing dot", in: []string{"name."}, want: "name_"},
		{name: "trailing space", in: []string{"name "}, want: "name_"},
		{name: "trailing dots and spaces", in: []string{"name. . "}, want: "name____"},
		{name: "leading space kept", in: []string{" name"}, want: " name"},
		{name: "windows reserved characters", in: []string{`a<b>c:d"e|f?g*h`}, want: "a_b_c_d_e_f_g_h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SafePath(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("SafePath(%q) = %q, want an error", tt.in, got)
				}
				var pe *PathError
				if !errors.As(err, &pe) || !errors.Is(err, ErrUnsafePath) {
					t.Fatalf("error %v is not a *PathError matching ErrUnsafePath", err)
				}
				if !strings.HasPrefix(err.Error(), "metainfo: ") || strings.ContainsAny(err.Error(), "\n\r\x00") {
					t.Fatalf("bad error text %q", err.Error())
				}
				return
			}
			if err != nil {
				t.Fatalf("SafePath(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("SafePath(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			safePathTestCheck(t, got)
		})
	}
}

// safePathTestCheck asserts the invariants every SafePath result must hold.
func safePathTestCheck(t *testing.T, p string) {
	t.Helper()
	if !utf8.ValidString(p) {
		t.Fatalf("result %q is not valid UTF-8", p)
	}
	if p == "" || filepath.IsAbs(p) || strings.HasPrefix(p, "/") || strings.Contains(p, `\`) {
		t.Fatalf("result %q is empty or absolute", p)
	}
	parts := strings.Split(p, "/")
	for _, c := range parts {
		switch {
		case c == "" || c == "." || c == "..":
			t.Fatalf("result %q has component %q", p, c)
		case len(c) > MaxPathComponent:
			t.Fatalf("result %q has a %d-byte component", p, len(c))
		case strings.ContainsAny(c, `<>:"|?*`):
			t.Fatalf("result %q has a reserved character", p)
		case strings.HasSuffix(c, ".") || strings.HasSuffix(c, " "):
			t.Fatalf("result %q has a trailing dot or space", p)
		}
		for _, r := range c {
			if unicode.IsControl(r) || safePathInvisible(r) {
				t.Fatalf("result %q has character %U", p, r)
			}
		}
	}
	again, err := SafePath(parts)
	if err != nil || again != p {
		t.Fatalf("SafePath is not idempotent on %q: %q, %v", p, again, err)
	}
}

func TestCheckUnique(t *testing.T) {
	many := make([]string, 500)
	for i := range many {
		many[i] = "a"
	}
	tests := []struct {
		name    string
		paths   []string
		wantErr string // substring of the error; "" means no error
	}{
		{name: "empty", paths: nil},
		{name: "distinct", paths: []string{"a/b", "a/c", "ab", "a-b", "b/a", "c"}},
		{name: "sibling prefix is not a directory", paths: []string{"a", "ab/c", "a.b"}},
		{name: "500 files named a", paths: many, wantErr: `"a" appears twice`},
		{name: "exact duplicate named", paths: []string{"x", "d/f", "y", "d/f"}, wantErr: `"d/f" appears twice`},
		{name: "case collision", paths: []string{"Readme.TXT", "readme.txt"}, wantErr: `"Readme.TXT" and "readme.txt" differ only in letter case`},
		{name: "case collision in directory", paths: []string{"Dir/a", "dir/A"}, wantErr: "letter case"},
		{name: "unicode case", paths: []string{"Été", "éTÉ"}, wantErr: "letter case"},
		{name: "kelvin sign", paths: []string{"k", "\u212A"}, wantErr: "letter case"},
		{name: "long s", paths: []string{"\u017F", "S"}, wantErr: "letter case"},
		{name: "file then directory", paths: []string{"a", "a/b"}, wantErr: `"a" is a file, so "a/b" cannot be below it`},
		{name: "directory then file", paths: []string{"a/b/c", "a/b"}, wantErr: `"a/b" is a file, but "a/b/c" makes it a directory`},
		{name: "file then deep directory in other case", paths: []string{"x", "A", "a/b/c"}, wantErr: `"A" is a file, so "a/b/c"`},
		{name: "first collision reported", paths: []string{"a", "b/c", "b", "a"}, wantErr: `"b" is a file, but "b/c"`},
		{name: "invalid UTF-8 stays distinct", paths: []string{"a\xff", "a\xfe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckUnique(tt.paths)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckUnique: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckUnique succeeded, want %q", tt.wantErr)
			}
			if !errors.Is(err, ErrDuplicatePath) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not wrap ErrDuplicatePath or lacks %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckUniqueLarge(t *testing.T) {
	paths := make([]string, 100_000)
	for i := range paths {
		paths[i] = fmt.Sprintf("d%d/sub%d/file%d.bin", i%100, i%7, i)
	}
	if err := CheckUnique(paths); err != nil {
		t.Fatal(err)
	}
	paths = append(paths, "D5/SUB5/FILE5.BIN")
	if err := CheckUnique(paths); !errors.Is(err, ErrDuplicatePath) {
		t.Fatalf("got %v, want a duplicate", err)
	}
	// One very deep path must not cost time quadratic in its depth.
	deep := strings.Repeat("a/", 50_000) + "f"
	if err := CheckUnique([]string{deep, deep + "2"}); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkCheckUnique(b *testing.B) {
	paths := make([]string, 100_000)
	for i := range paths {
		paths[i] = fmt.Sprintf("Album %d/Disc %d/Track %d.flac", i%100, i%3, i)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckUnique(paths); err != nil {
			b.Fatal(err)
		}
	}
}

func TestWithinRoot(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"out":      outside,                              // directory link leaving root
		"outfile":  filepath.Join(outside, "secret"),     // file link leaving root
		"dangling": filepath.Join(outside, "missing"),    // creating through it writes outside
		"in":       filepath.Join(root, "sub"),           // link that stays inside
		"relout":   filepath.Join("..", "outside"),       // relative link leaving root
		"loop":     filepath.Join(root, "loop"),          // cannot be resolved
		"sub/up":   filepath.Join("..", "..", "outside"), // nested relative link leaving root
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, filepath.FromSlash(name))); err != nil {
			t.Skipf("symlinks unavailable: %v", err)
		}
	}
	linkedRoot := filepath.Join(base, "rootlink")
	if err := os.Symlink(root, linkedRoot); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		root string
		rel  string
		want string // "" means an error is expected
	}{
		{name: "new file", root: root, rel: "a/b.txt", want: filepath.Join(root, "a", "b.txt")},
		{name: "existing directory", root: root, rel: "sub/f", want: filepath.Join(root, "sub", "f")},
		{name: "lexical dot-dot inside", root: root, rel: "a/../b", want: filepath.Join(root, "b")},
		{name: "symlink inside root to inside", root: root, rel: "in/f", want: filepath.Join(root, "in", "f")},
		{name: "root is a symlink", root: linkedRoot, rel: "sub/f", want: filepath.Join(linkedRoot, "sub", "f")},
		{name: "missing root", root: filepath.Join(base, "nope"), rel: "a", want: filepath.Join(base, "nope", "a")},
		{name: "parent escape", root: root, rel: "../outside/secret"},
		{name: "deep escape", root: root, rel: "a/../../x"},
		{name: "absolute", root: root, rel: "/etc/passwd"},
		{name: "root itself", root: root, rel: ""},
		{name: "dot", root: root, rel: "."},
		{name: "symlink inside root pointing outside", root: root, rel: "out/new"},
		{name: "symlink to existing outside directory entry", root: root, rel: "out/secret"},
		{name: "file symlink pointing outside", root: root, rel: "outfile"},
		{name: "dangling symlink", root: root, rel: "dangling"},
		{name: "relative symlink outside", root: root, rel: "relout/x/y"},
		{name: "symlink loop", root: root, rel: "loop/x"},
		{name: "nested symlink outside", root: root, rel: "sub/up/secret"},
		{name: "via symlinked root", root: linkedRoot, rel: "out/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := WithinRoot(tt.root, tt.rel)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("WithinRoot(%q) = %q, want an error", tt.rel, got)
				}
				if !errors.Is(err, ErrUnsafePath) {
					t.Fatalf("error %v does not match ErrUnsafePath", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("WithinRoot(%q): %v", tt.rel, err)
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// safePathFuzzSep separates components in FuzzSafePath's input. 0xFF never
// occurs in valid UTF-8, and every other invalid byte is still reachable.
const safePathFuzzSep = "\xff"

func FuzzSafePath(f *testing.F) {
	for _, s := range []string{
		"dir\xfffile.txt",
		"..\xff..\xffetc\xffpasswd",
		"/etc/passwd",
		`C:\x`,
		"\xff",
		"con\xffnul.txt\xffLPT9 .",
		"evil\u202Egpj.exe",
		"a\xc3\xff\xe2\x80",
		strings.Repeat("é", 130) + ".txt",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		components := strings.Split(in, safePathFuzzSep)
		got, err := SafePath(components)
		if err != nil {
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("error %v does not match ErrUnsafePath", err)
			}
			return
		}
		if n := strings.Count(got, "/") + 1; n != len(components) {
			t.Fatalf("%d components became %d: %q", len(components), n, got)
		}
		safePathTestCheck(t, got)
	})
}
