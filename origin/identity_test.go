package origin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

// sizeTimeResolver is a Resolver that fills Key, Path, Size and ModTime
// and leaves Changed and Inode zero, as Resource allows.
type sizeTimeResolver struct{ dir string }

func (r sizeTimeResolver) Resolve(req *http.Request, fetch bool) (Resource, bool) {
	key := path.Clean(req.URL.Path)
	p := filepath.Join(r.dir, filepath.FromSlash(key))
	st, err := os.Stat(p)
	if err != nil || !st.Mode().IsRegular() {
		return Resource{}, false
	}
	return Resource{Key: key, Path: p, Size: st.Size(), ModTime: st.ModTime()}, true
}

func (r sizeTimeResolver) Check(res Resource) bool {
	st, err := os.Stat(res.Path)
	return err == nil && st.Mode().IsRegular() && st.Size() == res.Size && st.ModTime().Equal(res.ModTime)
}

// TestResolverWithoutIdentityPublishes: a Resolver that leaves Changed
// and Inode zero still gets its files published: the file's own status
// change time and inode are not held against a version without them.
func TestResolverWithoutIdentityPublishes(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "big.bin", content(3<<20, 41), baseTime)
	p := newPublisher(t, Config{Resolver: sizeTimeResolver{dir}, Announce: testAnnounce, Wait: 10 * time.Second})
	srv := serve(t, p, dir)
	var r response
	for range 3 {
		r = get(t, srv.Client(), "GET", srv.URL+"/big.bin", "Accept", negotiate.MediaType)
		if r.torrent() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no torrent for a file of a size-and-time Resolver: status %d, type %q", r.StatusCode, r.Header.Get("Content-Type"))
}

// TestRecordNameWithoutIdentity: a version without Changed and Inode
// (every system but Linux, or a Resolver that leaves them zero) keeps the
// record name of the releases that kept no such fields, so that Load does
// not call their records unreadable and hash every file again.
func TestRecordNameWithoutIdentity(t *testing.T) {
	res := Resource{Key: "/big.bin", Path: "/srv/big.bin", Size: 3 << 20, ModTime: baseTime}
	h := sha256.New()
	for _, s := range []string{res.Key, res.Path, strconv.FormatInt(res.Size, 10), strconv.FormatInt(res.ModTime.UnixNano(), 10)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	oldName := hex.EncodeToString(h.Sum(nil)) + recordExt
	if got := recordName(res); got != oldName {
		t.Errorf("recordName of a version without ctime and inode is %s; the releases before them named it %s", got, oldName)
	}
}

// TestRecordWithoutIdentityLoads: the same, end to end, with a Resolver
// whose versions are size and time: a record written by the previous
// release loads.
func TestRecordWithoutIdentityLoads(t *testing.T) {
	root := t.TempDir()
	dir, data := filepath.Join(root, "pub"), filepath.Join(root, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, dir, "big.bin", content(1<<20, 42), baseTime)
	mi, err := metainfo.Build(t.Context(), file, metainfo.BuildOptions{Name: "big.bin", PieceLength: max(metainfo.AutoPieceLength(1<<20), minPieceLength)})
	if err != nil {
		t.Fatal(err)
	}
	torrent, err := mi.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(file)
	// The previous release's record: its JSON fields, and its name.
	old := struct {
		Key     string `json:"key"`
		Path    string `json:"path"`
		Size    int64  `json:"size"`
		ModTime int64  `json:"mtime_ns"`
		Torrent []byte `json:"torrent"`
	}{"/big.bin", file, st.Size(), st.ModTime().UnixNano(), torrent}
	js, _ := json.Marshal(old)
	h := sha256.New()
	for _, s := range []string{old.Key, old.Path, strconv.FormatInt(old.Size, 10), strconv.FormatInt(old.ModTime, 10)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	name := filepath.Join(data, hex.EncodeToString(h.Sum(nil))+recordExt)
	if err := os.WriteFile(name, js, 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(cfg Config) (int, bool) {
		t.Helper()
		cfg.DataDir, cfg.Announce = data, testAnnounce
		p := newPublisher(t, cfg)
		n, err := p.Load()
		if err != nil {
			t.Fatal(err)
		}
		p.Close()
		_, statErr := os.Stat(name)
		return n, statErr == nil
	}
	if n, kept := load(Config{Resolver: sizeTimeResolver{dir}}); n != 1 || !kept {
		t.Fatalf("Load = %d for a record of the previous release whose file did not change (record kept: %v)", n, kept)
	}
	// Where the system has status change times and inodes, the published
	// directory's versions have them, and a record without them is of a
	// version that can no longer be told from a file rewritten with its
	// size and time kept: it is dropped, and the file hashed once more.
	n, kept := load(Config{Dir: dir})
	if st, _ := os.Stat(file); fileResource("/big.bin", file, st).Inode != 0 {
		if n != 0 || kept {
			t.Errorf("Load = %d (record kept: %v) for a record without the identity this system has", n, kept)
		}
	} else if n != 1 || !kept {
		t.Errorf("Load = %d (record kept: %v) on a system without status change times", n, kept)
	}
}
