//go:build unix

package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestGetFileMode: get creates its output as curl and wget do, with mode
// 0666 less the umask, and leaves no partial file behind.
func TestGetFileMode(t *testing.T) {
	content := bytes.Repeat([]byte("plain "), 10_000)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(content)
	}))
	defer origin.Close()
	for _, tt := range []struct {
		umask int
		want  os.FileMode
	}{{0o022, 0o644}, {0o027, 0o640}, {0o002, 0o664}} {
		dir := t.TempDir()
		out := filepath.Join(dir, "file.bin")
		old := syscall.Umask(tt.umask)
		err := run(context.Background(), []string{"get", "-q", "-o", out, origin.URL + "/file.bin"}, io.Discard, io.Discard)
		syscall.Umask(old)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != tt.want {
			t.Errorf("umask %03o: mode %v, want %v", tt.umask, st.Mode().Perm(), tt.want)
		}
		if des, _ := os.ReadDir(dir); len(des) != 1 {
			t.Errorf("umask %03o: %d files in the directory, want only the output", tt.umask, len(des))
		}
	}
}
