package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// defaultDataDir is where the cache lives: the XDG cache directory.
func defaultDataDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "tbproxy")
	}
	return filepath.Join(dir, "tbproxy")
}

// defaultCADir is where the MITM CA lives: the XDG config directory.
func defaultCADir() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no config directory for the CA (set XDG_CONFIG_HOME or HOME): %w", err)
	}
	return filepath.Join(dir, "tbproxy", "ca"), nil
}

// checkDataDir makes the data directory if needed and checks that files
// can be made in it, so that a directory the user cannot write stops the
// command at startup instead of failing its first download.
func checkDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the data directory: %w", err)
	}
	if err := checkWritable(dir); err != nil {
		return fmt.Errorf("the data directory %s is not writable: %w", dir, err)
	}
	return nil
}

// checkWritable checks that a file can be created in dir, and removed, by
// making and removing one. Unlike the permission bits, or access(2) for
// root, it answers for read-only mounts and file systems too. The error is
// the system's (permission denied, read-only file system, ...).
func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".tbproxy-write-check-*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return pe.Err
		}
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}
