package main

import (
	"fmt"
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
