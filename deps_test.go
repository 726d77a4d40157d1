package tbproxy_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/tbproxy/tbproxy"

// allowed is the import table of DESIGN.md section 2: for each top-level
// package, the other top-level packages of this module its production code
// may import. A package's own subpackages are always allowed.
var allowed = map[string][]string{
	"bencode":   {},
	"metainfo":  {"bencode"},
	"negotiate": {"metainfo"},
	"tracker":   {"bencode", "metainfo"},
	"swarm":     {"bencode", "metainfo", "tracker"},
	// dht is not in DESIGN.md's table yet: the Mainline DHT node (BEP 5).
	// It serves swarm as a peer source through a small adapter in cmd, so
	// it does not import swarm.
	"dht":         {"bencode", "metainfo"},
	"cache":       {"metainfo"},
	"certs":       {},
	"proxy":       {"negotiate", "metainfo", "certs", "swarm"},
	"origin":      {"negotiate", "metainfo", "tracker"},
	"cmd":         {"*"},
	"integration": {"*"},
	"bench":       {"*"},
}

// forbidden lists outside imports a package must never take, whatever the
// table says, with the reason.
var forbidden = map[string]map[string]string{
	"bencode": {"net": "a codec has no business with the network", "net/http": "a codec has no business with the network"},
	"dht":     {"net/http": "the DHT speaks UDP only"},
	"swarm":   {"github.com/elazarl/goproxy": "only proxy imports goproxy"},
}

func TestImportDirection(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != "." && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || path == "deps_test.go" {
			return nil
		}
		checkFile(t, path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func checkFile(t *testing.T, path string) {
	dir := filepath.ToSlash(filepath.Dir(path))
	top, _, _ := strings.Cut(dir, "/")
	isTest := strings.HasSuffix(path, "_test.go")
	rules, known := allowed[top]
	if !known {
		t.Errorf("%s: package %q is not in the import table; add it to DESIGN.md and deps_test.go", path, dir)
		return
	}
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	for _, spec := range f.Imports {
		imp, _ := strconv.Unquote(spec.Path.Value)
		if why, bad := forbidden[top][imp]; bad {
			t.Errorf("%s imports %s: %s", path, imp, why)
		}
		if imp == "github.com/elazarl/goproxy" && top != "proxy" && !isTest {
			t.Errorf("%s imports goproxy: only proxy may", path)
		}
		if imp == "testing" && !isTest && top != "integration" {
			t.Errorf("%s: production code imports testing", path)
		}
		rest, ours := strings.CutPrefix(imp, module+"/")
		if !ours || isTest {
			continue // tests may reach across to build fixtures
		}
		dep, _, _ := strings.Cut(rest, "/")
		if dep == top || slices.Contains(rules, "*") || slices.Contains(rules, dep) {
			continue
		}
		t.Errorf("%s (package %s) imports %s: %s may import only %v", path, top, imp, top, rules)
	}
}

// TestImportTableMatchesDesign keeps the table honest: every package folder
// that exists is listed, so a new package cannot slip past the rules.
func TestImportTableMatchesDesign(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if _, ok := allowed[e.Name()]; !ok {
			matches, _ := filepath.Glob(filepath.Join(e.Name(), "*.go"))
			if len(matches) > 0 {
				t.Errorf("folder %s holds Go code but is not in the import table", e.Name())
			}
		}
	}
}
