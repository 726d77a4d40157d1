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

// swarmgetPkg is the import path of the engine's leecher.
const swarmgetPkg = "github.com/tbproxy/tbproxy/bench/cmd/swarmget"

// workspace is what every run shares: the temporary root (removed at the
// end), the programs, and the seed's content.
type workspace struct {
	root     string // temporary; everything below is removed with it
	swarmget string // the built engine leecher
	ltpeer   string // integration/testdata/ltpeer.py, the seed
	ltleech  string // ltleech.py, the libtorrent leecher
	content  string // the random file; its directory is the seed's save dir
	size     int64
}

// torrent is one .torrent of the content.
type torrent struct {
	path     string
	pieceLen int64
	meta     *metainfo.MetaInfo
}

// newWorkspace creates the temporary root and fills it. On error it
// removes what it made.
func newWorkspace(ctx context.Context, log io.Writer, module string, size int64) (ws *workspace, err error) {
	root, err := os.MkdirTemp("", "tbproxy-bench-")
	if err != nil {
		return nil, err
	}
	ws = &workspace{root: root, size: size}
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
	fmt.Fprintf(log, "bench: building %s\n", swarmgetPkg)
	ws.swarmget = filepath.Join(root, "swarmget")
	if _, err = output(ctx, []string{"go", "build", "-o", ws.swarmget, swarmgetPkg}); err != nil {
		return ws, err
	}
	fmt.Fprintf(log, "bench: writing %s of random content\n", formatBytes(size))
	ws.content = filepath.Join(root, "content", "bench.bin")
	return ws, writeRandomFile(ws.content, size)
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
