package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// defaultConfigFile is the optional TOML file in the XDG config directory.
func defaultConfigFile() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "tbproxy", "config.toml")
}

// configPath finds --config in args (before flag parsing, since the file
// supplies defaults the flags then override). explicit reports whether the
// user named one.
func configPath(args []string) (path string, explicit bool) {
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if hasValue {
			return value, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
	}
	return defaultConfigFile(), false
}

// applyConfigFile sets flags from a TOML file whose keys are the flags'
// names: `cache-size = "20GiB"`, `mitm = true`, `mitm-exclude = ["a", "b"]`.
// A missing default file is fine; a missing named one, an unknown key or a
// bad value is an error that names the key.
func applyConfigFile(fset *flag.FlagSet, path string, explicit bool) error {
	if path == "" {
		return nil
	}
	var values map[string]any
	if _, err := toml.DecodeFile(path, &values); err != nil {
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			return nil
		}
		return fmt.Errorf("config file: %w", err)
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "config" || fset.Lookup(k) == nil {
			return fmt.Errorf("config file %s: unknown setting %q (see tbproxy --help)", path, k)
		}
		items, isList := values[k].([]any)
		if !isList {
			items = []any{values[k]}
		}
		for _, v := range items {
			if err := fset.Set(k, fmt.Sprint(v)); err != nil {
				return fmt.Errorf("config file %s: %s: %w", path, k, err)
			}
		}
	}
	return nil
}

// encryptionUsage documents the --encryption flag of run, publish and get.
const encryptionUsage = "peer `policy` for BitTorrent message stream encryption (MSE/PE): " +
	"prefer (try it, fall back to plain), require (RC4-encrypted peers only) or disable"
