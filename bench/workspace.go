//go:build linux

package main

import (
	"context"
	crand "crypto/rand"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tbproxy/tbproxy/metainfo"
)

//go:embed ltleech.py
var ltleechScript []byte

//go:embed wrkproxy.lua
var wrkScript []byte

// The packages the bench builds.
const (
	swarmgetPkg = "github.com/tbproxy/tbproxy/bench/cmd/swarmget"
	tbproxyPkg  = "github.com/tbproxy/tbproxy/cmd/tbproxy"
	minproxyPkg = "github.com/tbproxy/tbproxy/bench/cmd/minproxy"
)

// pageSize is the size of the small page of comparison 5.
const pageSize = 4 << 10

// workspace is what every run shares: the temporary root (removed at the
// end), the programs, and the content.
type workspace struct {
	root     string // temporary; everything below is removed with it
	swarmget string // the built engine leecher; "" unless comparison 1 or 1b runs
	tbproxy  string // the tbproxy binary; "" unless comparisons 2 to 5 run
	minproxy string // the minimal Go proxy; "" unless comparison 2 runs
	ltpeer   string // integration/testdata/ltpeer.py, the seed
	ltleech  string // ltleech.py, the libtorrent leecher
	wrkLua   string // wrkproxy.lua, wrk's script
	content  string // the random file (bench.bin); its directory is the seed's save dir, nginx's and the publisher's
	size     int64
	offload  string      // comparison 4's random file (offload.bin), next to content; "" unless it runs
	www      string      // a directory holding comparison 5's page.html
	scale    []scaleCase // comparison 6's loads, their files written; nil unless it runs
}

// torrent is one .torrent of the content.
type torrent struct {
	path     string
	pieceLen int64
	meta     *metainfo.MetaInfo
}

// newWorkspace creates the temporary root and fills it with what the
// selected comparisons need. On error it removes what it made.
func newWorkspace(ctx context.Context, log io.Writer, module string, cfg config) (ws *workspace, err error) {
	root, err := os.MkdirTemp("", "tbproxy-bench-")
	if err != nil {
		return nil, err
	}
	ws = &workspace{root: root, size: cfg.size}
	defer func() {
		if err != nil {
			err = errors.Join(err, ws.remove())
			ws = nil
		}
	}()
	ws.ltpeer = filepath.Join(module, "integration", "testdata", "ltpeer.py")
	if _, err = os.Stat(ws.ltpeer); err != nil {
		return ws, err
	}
	ws.ltleech = filepath.Join(root, "ltleech.py")
	if err = os.WriteFile(ws.ltleech, ltleechScript, 0o755); err != nil {
		return ws, err
	}
	ws.wrkLua = filepath.Join(root, "wrkproxy.lua")
	if err = os.WriteFile(ws.wrkLua, wrkScript, 0o644); err != nil {
		return ws, err
	}
	if cfg.has(cmpSwarm) || cfg.has(cmpMixed) {
		fmt.Fprintf(log, "bench: building %s\n", swarmgetPkg)
		ws.swarmget = filepath.Join(root, "swarmget")
		if _, err = output(ctx, []string{"go", "build", "-o", ws.swarmget, swarmgetPkg}); err != nil {
			return ws, err
		}
	}
	if cfg.has(cmpProxy) {
		fmt.Fprintf(log, "bench: building %s\n", minproxyPkg)
		ws.minproxy = filepath.Join(root, "minproxy")
		if _, err = output(ctx, []string{"go", "build", "-o", ws.minproxy, minproxyPkg}); err != nil {
			return ws, err
		}
	}
	if usesTBProxy(cfg) {
		if ws.tbproxy, err = tbproxyBinary(ctx, log, root, cfg.tbproxyBin); err != nil {
			return ws, err
		}
	}
	ws.content = filepath.Join(root, "content", "bench.bin")
	if cfg.has(cmpSwarm) || cfg.has(cmpMixed) || cfg.has(cmpProxy) || cfg.has(cmpSeek) || cfg.has(cmpPassthrough) {
		fmt.Fprintf(log, "bench: writing %s of random content\n", formatBytes(cfg.size))
		if err = writeRandomFile(ws.content, cfg.size); err != nil {
			return ws, err
		}
	}
	if cfg.has(cmpOffload) {
		fmt.Fprintf(log, "bench: writing %s of random content for comparison 4\n", formatBytes(cfg.offloadSize))
		ws.offload = filepath.Join(root, "content", "offload.bin")
		if err = writeRandomFile(ws.offload, cfg.offloadSize); err != nil {
			return ws, err
		}
	}
	if cfg.has(cmpScale) {
		for i, c := range cfg.scaleCases {
			c.dir = filepath.Join(root, fmt.Sprintf("scale-%d", i))
			fmt.Fprintf(log, "bench: writing %d × %s of random content for comparison 6\n", c.torrents, formatBytes(c.size))
			if err = writeScaleFiles(c); err != nil {
				return ws, err
			}
			ws.scale = append(ws.scale, c)
		}
	}
	ws.www = filepath.Join(root, "www")
	if err = os.MkdirAll(ws.www, 0o755); err != nil {
		return ws, err
	}
	return ws, os.WriteFile(filepath.Join(ws.www, "page.html"), page(pageSize), 0o644)
}

// tbproxyBinary builds tbproxy into dir, or checks the one given.
func tbproxyBinary(ctx context.Context, log io.Writer, dir, given string) (string, error) {
	if given != "" {
		abs, err := filepath.Abs(given)
		if err != nil {
			return "", err
		}
		if st, err := os.Stat(abs); err != nil || st.Mode()&0o111 == 0 || st.IsDir() {
			return "", fmt.Errorf("--tbproxy %s: not an executable file", given)
		}
		return abs, nil
	}
	fmt.Fprintf(log, "bench: building %s\n", tbproxyPkg)
	bin := filepath.Join(dir, "tbproxy")
	_, err := output(ctx, []string{"go", "build", "-o", bin, tbproxyPkg})
	return bin, err
}

// page is a small HTML page of exactly size bytes.
func page(size int) []byte {
	const head, tail = "<!doctype html>\n<title>tbproxy bench</title>\n<pre>\n", "</pre>\n"
	b := []byte(head)
	line := "The quick brown fox jumps over the lazy dog, 0123456789.\n"
	for len(b)+len(line)+len(tail) <= size {
		b = append(b, line...)
	}
	for len(b)+len(tail) < size {
		b = append(b, '.')
	}
	return append(b, tail...)
}

// remove deletes the workspace.
func (ws *workspace) remove() error { return os.RemoveAll(ws.root) }

// tempDir makes a fresh directory under the root.
func (ws *workspace) tempDir(prefix string) (string, error) {
	return os.MkdirTemp(ws.root, prefix)
}

// moduleRoot is the directory of the tbproxy module the bench runs in.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the bench inside the tbproxy module (go run ./bench)")
	}
	return filepath.Dir(gomod), nil
}

// writeRandomFile writes size bytes from a freshly seeded ChaCha8.
func writeRandomFile(path string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var key [32]byte
	crand.Read(key[:])
	src := rand.NewChaCha8(key)
	if _, err := io.CopyN(f, src, size); err != nil {
		return errors.Join(fmt.Errorf("writing %s: %w", path, err), f.Close())
	}
	// Flushed once here, so that its writeback does not compete with the
	// first downloads.
	if err := f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("syncing %s: %w", path, err), f.Close())
	}
	return f.Close()
}

// makeTorrent builds a trackerless .torrent of the content.
func (ws *workspace) makeTorrent(ctx context.Context, pieceLen int64) (torrent, error) {
	m, err := metainfo.Build(ctx, ws.content, metainfo.BuildOptions{PieceLength: pieceLen, CreatedBy: "tbproxy bench"})
	if err != nil {
		return torrent{}, fmt.Errorf("building torrent: %w", err)
	}
	data, err := m.Marshal()
	if err != nil {
		return torrent{}, err
	}
	path := filepath.Join(ws.root, fmt.Sprintf("bench-%d.torrent", pieceLen))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return torrent{}, err
	}
	return torrent{path: path, pieceLen: pieceLen, meta: m}, nil
}
