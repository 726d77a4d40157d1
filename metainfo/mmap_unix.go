//go:build unix

package metainfo

import (
	"os"
	"syscall"
)

// mapFile maps all of f read-only, so pieces are hashed straight from the
// page cache instead of being copied out first. It returns nil when the
// file cannot be mapped; the caller then reads it.
func mapFile(f *os.File, size int64) (data []byte, unmap func()) {
	if size <= 0 || int64(int(size)) != size {
		return nil, nil
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil
	}
	syscall.Madvise(data, syscall.MADV_SEQUENTIAL)
	return data, func() { syscall.Munmap(data) }
}
