//go:build !unix

package cache

import "os"

// allocated is the number of bytes a file occupies on disk; without block
// counts, the file's size is the safe upper bound.
func allocated(fi os.FileInfo) int64 { return fi.Size() }
