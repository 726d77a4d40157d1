//go:build !linux

package main

import "os"

// preallocate sizes f; without fallocate the file may be sparse.
func preallocate(f *os.File, size int64) error {
	return f.Truncate(size)
}
