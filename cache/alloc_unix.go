//go:build unix

package cache

import (
	"os"
	"syscall"
)

// allocated is the number of bytes a file occupies on disk, holes excluded.
func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
