package main

import (
	"os"
	"syscall"
)

// preallocate reserves size bytes for f, so that writes at piece offsets
// never extend the file.
func preallocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	return syscall.Fallocate(int(f.Fd()), 0, 0, size)
}
