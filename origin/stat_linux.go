package origin

import (
	"os"
	"syscall"
	"time"
)

// statIdentity returns what else than its size and modification time
// tells a file's versions apart: its status change time, which any write
// moves and no copy tool can set back, and its inode, which a file
// replaced by a rename does not keep.
func statIdentity(st os.FileInfo) (changed time.Time, inode uint64) {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return time.Unix(s.Ctim.Unix()), s.Ino
	}
	return time.Time{}, 0
}

// unlinked reports whether the file st describes has no name left (it was
// deleted, or replaced by a rename): unlinking moves its status change
// time, not its bytes.
func unlinked(st os.FileInfo) bool {
	s, ok := st.Sys().(*syscall.Stat_t)
	return ok && s.Nlink == 0
}
