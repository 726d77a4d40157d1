package metainfo

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
)

// BuildOptions configures Build. The zero value builds a torrent with an
// automatic piece length, no trackers and no creation date.
type BuildOptions struct {
	// PieceLength is the piece size in bytes, a multiple of 16 KiB; 0
	// picks one from the total size (see AutoPieceLength).
	PieceLength int64
	// Name overrides the torrent name; empty means the base name of the path.
	Name string
	// Trackers are tiers of announce URLs. The first URL becomes announce;
	// announce-list is written when there is more than one URL.
	Trackers [][]string
	// URLList are BEP 19 web seeds.
	URLList      []string
	Comment      string
	CreatedBy    string
	CreationDate time.Time // zero: omitted, so equal input builds equal bytes
	Private      bool
	Source       string
	// Workers is how many goroutines hash; 0 means GOMAXPROCS.
	Workers int
}

// AutoPieceLength picks a power-of-two piece length for total bytes that
// gives about 1,000 to 2,000 pieces, between 16 KiB and 16 MiB.
func AutoPieceLength(total int64) int64 {
	const lo, hi = BlockSize, 16 << 20
	target := total / 1500
	if target <= lo {
		return lo
	}
	pl := int64(1) << bits.Len64(uint64(target-1))
	return min(pl, hi)
}

// Build hashes the file or directory at path and returns its metainfo. A
// directory becomes a multi-file torrent of the regular files under it, in
// lexical order; symbolic links and other special files are skipped.
// Hashing runs on opts.Workers goroutines, which have all ended when Build
// returns. ctx cancels it.
func Build(ctx context.Context, path string, opts BuildOptions) (*MetaInfo, error) {
	// Absolute, so that "." and ".." are named after the directories
	// they stand for.
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("metainfo: build: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("metainfo: build: %w", err)
	}
	name := opts.Name
	if name == "" {
		name = filepath.Base(path)
	}
	var src []srcFile
	d := infoDict{Name: name, Source: opts.Source}
	if st.IsDir() {
		// A link to the directory is followed (the walk would not enter
		// it); links under it are still skipped.
		root, err := filepath.EvalSymlinks(path)
		if err != nil {
			return nil, fmt.Errorf("metainfo: build: %w", err)
		}
		if src, err = walkFiles(root); err != nil {
			return nil, err
		}
		for _, f := range src {
			l := f.length
			d.Files = append(d.Files, fileDict{Length: &l, Path: f.rel})
		}
	} else {
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("metainfo: build: %s is not a regular file or directory", path)
		}
		l := st.Size()
		src = []srcFile{{abs: path, length: l}}
		d.Length = &l
	}
	var total int64
	for _, f := range src {
		total += f.length
	}
	if total == 0 {
		return nil, fmt.Errorf("metainfo: build: %s holds no data", path)
	}
	d.PieceLength = opts.PieceLength
	if d.PieceLength == 0 {
		d.PieceLength = AutoPieceLength(total)
	}
	if d.PieceLength < 0 || d.PieceLength%BlockSize != 0 || d.PieceLength > MaxPieceLength {
		return nil, fmt.Errorf("metainfo: build: piece length %d: must be a multiple of %d up to %d", d.PieceLength, BlockSize, MaxPieceLength)
	}
	if opts.Private {
		d.Private = 1
	}
	if d.Pieces, err = hashPieces(ctx, src, total, d.PieceLength, opts.Workers); err != nil {
		return nil, err
	}
	raw, err := bencode.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("metainfo: build: %w", err)
	}
	m := &MetaInfo{
		InfoBytes:    raw,
		InfoHash:     sha1.Sum(raw),
		URLList:      opts.URLList,
		Comment:      opts.Comment,
		CreatedBy:    opts.CreatedBy,
		CreationDate: opts.CreationDate,
	}
	for _, tier := range opts.Trackers {
		if len(tier) == 0 {
			continue
		}
		if m.Announce == "" {
			m.Announce = tier[0]
		}
		m.AnnounceList = append(m.AnnounceList, tier)
	}
	if len(m.AnnounceList) == 1 && len(m.AnnounceList[0]) == 1 {
		m.AnnounceList = nil
	}
	// Validate what was built exactly as a received torrent would be.
	if err := m.Info.parse(raw, bencode.DecodeOptions{Alias: true}, Limits{}.withDefaults()); err != nil {
		return nil, fmt.Errorf("metainfo: build: %w", err)
	}
	return m, nil
}

// srcFile is one input file of a build.
type srcFile struct {
	abs    string
	rel    []string // path components under the root directory
	length int64
}

func walkFiles(root string) ([]srcFile, error) {
	var out []srcFile
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !de.Type().IsRegular() {
			return nil
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		out = append(out, srcFile{abs: p, rel: splitPath(rel), length: info.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("metainfo: build: %w", err)
	}
	return out, nil
}

func splitPath(rel string) []string {
	var parts []string
	for rel != "." && rel != "" {
		dir, file := filepath.Split(rel)
		parts = append([]string{file}, parts...)
		rel = filepath.Clean(dir)
		if rel == string(filepath.Separator) {
			break
		}
	}
	return parts
}

// hashBatch is how many pieces a worker takes at a time: enough to keep its
// reads long and sequential.
const hashBatchBytes = 8 << 20

// hashPieces hashes the concatenation of src in pieces of pieceLen bytes.
// Workers take batches of consecutive pieces, so each reads sequentially
// and all cores hash.
func hashPieces(ctx context.Context, src []srcFile, total, pieceLen int64, workers int) ([]byte, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	n := int((total + pieceLen - 1) / pieceLen)
	if n > DefaultMaxPieces {
		return nil, fmt.Errorf("metainfo: build: %d pieces, limit %d: use a larger piece length", n, DefaultMaxPieces)
	}
	hashes := make([]byte, n*HashSize)
	batch := int(max(1, hashBatchBytes/pieceLen))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		mu   sync.Mutex
		next int   // first piece of the next batch to hand out
		werr error // first error; stops everyone
	)
	take := func() (int, int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if werr != nil || next >= n {
			return 0, 0, false
		}
		b := next
		next = min(n, next+batch)
		return b, next, true
	}
	fail := func(err error) {
		mu.Lock()
		if werr == nil {
			werr = err
		}
		mu.Unlock()
		cancel()
	}
	maps := mapFiles(src)
	defer maps.close()
	var wg sync.WaitGroup
	for range min(workers, (n+batch-1)/batch) {
		wg.Go(func() {
			r := newConcatReader(src, maps)
			defer r.close()
			// A mapped file truncated under us faults; make that an
			// error for this build rather than a crash.
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() {
				if e := recover(); e != nil {
					fail(fmt.Errorf("metainfo: build: a file changed while it was hashed: %v", e))
				}
			}()
			buf := make([]byte, pieceLen)
			for {
				b, e, ok := take()
				if !ok {
					return
				}
				for i := b; i < e; i++ {
					if err := ctx.Err(); err != nil {
						fail(err)
						return
					}
					off := int64(i) * pieceLen
					n := min(pieceLen, total-off)
					p, ok := r.mapped(off, n)
					if !ok {
						p = buf[:n]
						if err := r.readAt(p, off); err != nil {
							fail(fmt.Errorf("metainfo: build: %w", err))
							return
						}
					}
					sum := sha1.Sum(p)
					copy(hashes[i*HashSize:], sum[:])
				}
			}
		})
	}
	wg.Wait()
	if werr != nil {
		return nil, werr
	}
	return hashes, nil
}

// minMapSize is the smallest file worth mapping; smaller ones are read.
const minMapSize = 4 << 20

// fileMaps holds read-only mappings of the large input files, shared by the
// hashing workers.
type fileMaps struct {
	data   [][]byte // data[i] maps src[i], or is nil
	unmaps []func()
}

func mapFiles(src []srcFile) *fileMaps {
	m := &fileMaps{data: make([][]byte, len(src))}
	for i, f := range src {
		if f.length < minMapSize {
			continue
		}
		fh, err := os.Open(f.abs)
		if err != nil {
			continue // the read path will report it
		}
		if st, err := fh.Stat(); err == nil && st.Size() == f.length {
			if data, unmap := mapFile(fh, f.length); data != nil {
				m.data[i] = data
				m.unmaps = append(m.unmaps, unmap)
			}
		}
		fh.Close() // a mapping outlives its descriptor
	}
	return m
}

func (m *fileMaps) close() {
	for _, u := range m.unmaps {
		u()
	}
}

// concatReader reads the files of a torrent as one byte stream, keeping the
// current file open between reads.
type concatReader struct {
	src  []srcFile
	offs []int64 // offs[i] is where src[i] starts
	maps *fileMaps
	cur  int // index of the open file, -1 for none
	f    *os.File
}

func newConcatReader(src []srcFile, maps *fileMaps) *concatReader {
	offs := make([]int64, len(src))
	var o int64
	for i, f := range src {
		offs[i] = o
		o += f.length
	}
	return &concatReader{src: src, offs: offs, maps: maps, cur: -1}
}

// mapped returns bytes [off, off+n) straight from a mapping when they lie
// within one mapped file.
func (c *concatReader) mapped(off, n int64) ([]byte, bool) {
	i := c.fileAt(off)
	if i < 0 || c.maps.data[i] == nil {
		return nil, false
	}
	within := off - c.offs[i]
	if within+n > c.src[i].length {
		return nil, false
	}
	return c.maps.data[i][within : within+n], true
}

func (c *concatReader) close() {
	if c.f != nil {
		c.f.Close()
	}
}

func (c *concatReader) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		i := c.fileAt(off)
		if i < 0 {
			return io.ErrUnexpectedEOF
		}
		if i != c.cur {
			c.close()
			f, err := os.Open(c.src[i].abs)
			if err != nil {
				c.f, c.cur = nil, -1
				return err
			}
			c.f, c.cur = f, i
		}
		within := off - c.offs[i]
		n := int(min(int64(len(p)), c.src[i].length-within))
		if _, err := c.f.ReadAt(p[:n], within); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%s shrank while hashing: %w", c.src[i].abs, io.ErrUnexpectedEOF)
			}
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// fileAt is the index of the non-empty file holding off, or -1: the first
// file that ends after off.
func (c *concatReader) fileAt(off int64) int {
	i := sort.Search(len(c.src), func(i int) bool { return c.offs[i]+c.src[i].length > off })
	if i == len(c.src) || off < c.offs[i] {
		return -1
	}
	return i
}
