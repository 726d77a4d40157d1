//go:build !unix

package metainfo

import "os"

// mapFile is unsupported here; the builder reads files instead.
func mapFile(*os.File, int64) ([]byte, func()) { return nil, nil }
