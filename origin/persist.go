package origin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

// recordExt ends the name of every record in the data directory.
const recordExt = ".torrent.json"

// maxRecord bounds a record read back: base64 of the largest metainfo plus
// room for the identity.
const maxRecord = negotiate.MaxMetainfoSize/3*4 + 64<<10

// record is one persisted version: its identity and its template metainfo.
type record struct {
	Key     string `json:"key"`
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
	Changed int64  `json:"ctime_ns,omitempty"`
	Inode   uint64 `json:"inode,omitempty"`
	Torrent []byte `json:"torrent"`
}

// recordName names the record of res: a hash of its identity, so that no
// part of a file name or URL reaches the data directory's names. Changed
// and Inode count only where res has them, so a version without them (on
// a system that has none, or from a Resolver that leaves them zero) keeps
// the name that records had before they were kept.
func recordName(res Resource) string {
	fields := []string{res.Key, res.Path, strconv.FormatInt(res.Size, 10), strconv.FormatInt(res.ModTime.UnixNano(), 10)}
	if !res.Changed.IsZero() || res.Inode != 0 {
		fields = append(fields, strconv.FormatInt(unixNano(res.Changed), 10), strconv.FormatUint(res.Inode, 10))
	}
	h := sha256.New()
	for _, s := range fields {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)) + recordExt
}

// isRecordName reports whether name is one recordName could give: 64
// lower-case hex digits and recordExt.
func isRecordName(name string) bool {
	hexPart, ok := strings.CutSuffix(name, recordExt)
	if !ok || len(hexPart) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil && strings.ToLower(hexPart) == hexPart
}

// recordPath is where res's record lives, or "" when nothing is persisted.
func (p *Publisher) recordPath(res Resource) string {
	if p.cfg.DataDir == "" {
		return ""
	}
	return filepath.Join(p.cfg.DataDir, recordName(res))
}

// readRecord reads the record at file, which anyone able to write to the
// data directory could have planted, and returns the version it names and
// its metainfo. It reads at most maxRecord bytes and accepts the record
// only when checkRecord does.
func readRecord(file string) (Resource, *metainfo.MetaInfo, error) {
	f, err := os.Open(file)
	if err != nil {
		return Resource{}, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return Resource{}, nil, err
	}
	if len(data) > maxRecord {
		return Resource{}, nil, errors.New("origin: record too large")
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return Resource{}, nil, fmt.Errorf("origin: record: %w", err)
	}
	mi, err := metainfo.Parse(rec.Torrent)
	if err != nil {
		return Resource{}, nil, fmt.Errorf("origin: record: %w", err)
	}
	res := Resource{Key: rec.Key, Path: rec.Path, Size: rec.Size, ModTime: time.Unix(0, rec.ModTime), Inode: rec.Inode}
	if rec.Changed != 0 {
		res.Changed = time.Unix(0, rec.Changed)
	}
	if err := checkRecord(res, mi); err != nil {
		return Resource{}, nil, err
	}
	return res, mi, nil
}

// checkRecord checks that a record's version is one a Resolver could have
// given (Key a cleaned URL path, Path absolute and clean) and that its
// metainfo describes that one file: single-file, of Size bytes (which
// metainfo.Parse guarantees is positive).
func checkRecord(res Resource, mi *metainfo.MetaInfo) error {
	if res.Key == "" || res.Key[0] != '/' || path.Clean(res.Key) != res.Key || strings.IndexByte(res.Key, 0) >= 0 {
		return errors.New("origin: record: key is not a cleaned url path")
	}
	if !filepath.IsAbs(res.Path) || filepath.Clean(res.Path) != res.Path || strings.IndexByte(res.Path, 0) >= 0 {
		return errors.New("origin: record: path is not absolute and clean")
	}
	if mi.Info.MultiFile || mi.Info.TotalLength != res.Size {
		return errors.New("origin: record does not describe its file")
	}
	return nil
}

// writeRecord persists mi for res: to a temporary file, then renamed, so
// a record is either whole or absent.
func writeRecord(file string, res Resource, mi *metainfo.MetaInfo) error {
	torrent, err := mi.Marshal()
	if err != nil {
		return err
	}
	data, err := json.Marshal(record{Key: res.Key, Path: res.Path, Size: res.Size, ModTime: res.ModTime.UnixNano(),
		Changed: unixNano(res.Changed), Inode: res.Inode, Torrent: torrent})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".record-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// removeRecord deletes a record, best effort: one left behind fails its
// check at the next Load and is deleted then.
func removeRecord(file string) {
	_ = os.Remove(file)
}

// unixNano is t in nanoseconds since 1970, and 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
