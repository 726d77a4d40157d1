package metainfo

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/tbproxy/tbproxy/bencode"
)

// Info is the validated info dictionary: what the info-hash covers.
type Info struct {
	Name        string
	PieceLength int64
	Pieces      []byte // concatenated SHA-1 piece hashes, 20 bytes each
	Private     bool   // BEP 27: announce only to the torrent's own trackers
	Source      string // BEP 27 source tag, if any
	// Files lists every file in torrent order, padding files included. A
	// single-file torrent has one, named after the torrent.
	Files       []File
	MultiFile   bool  // the torrent has a files list (its name is a directory)
	TotalLength int64 // sum of all file lengths, padding included
	Hybrid      bool  // BEP 52 hybrid; only its v1 part is used
}

// File is one file of a torrent, placed in the torrent's byte stream.
type File struct {
	// Path is the file's path as the torrent gives it, from the download
	// root: [name] for a single-file torrent, [name, dirs..., file]
	// otherwise. Never use it to name a file on disk; see SafePath.
	Path []string
	// SafePath is Path made safe to use under a root directory, joined
	// with "/". Empty for padding files.
	SafePath string
	Length   int64
	Offset   int64  // where the file starts in the torrent's byte stream
	Attr     string // BEP 47 attributes: p padding, x executable, h hidden, l symlink
	// SymlinkPath is a BEP 47 link target. It is reported, never followed
	// or created.
	SymlinkPath []string
}

// Padding reports whether the file is a BEP 47 padding file: zeros that
// align the next file to a piece boundary.
func (f File) Padding() bool { return strings.ContainsRune(f.Attr, 'p') }

// DisplayPath is Path joined with "/", for matching and messages.
func (f File) DisplayPath() string { return strings.Join(f.Path, "/") }

type infoDict struct {
	Files       []fileDict `bencode:"files,omitempty"`
	Length      *int64     `bencode:"length,omitempty"`
	MetaVersion int64      `bencode:"meta version,omitempty"`
	Name        string     `bencode:"name"`
	PieceLength int64      `bencode:"piece length"`
	Pieces      []byte     `bencode:"pieces"`
	Private     int64      `bencode:"private,omitempty"`
	Source      string     `bencode:"source,omitempty"`

	FileTree bencode.RawMessage `bencode:"file tree,omitempty"` // v2 only
}

type fileDict struct {
	Attr        string   `bencode:"attr,omitempty"`
	Length      *int64   `bencode:"length"`
	Path        []string `bencode:"path"`
	SymlinkPath []string `bencode:"symlink path,omitempty"`
}

func (info *Info) parse(raw []byte, opts bencode.DecodeOptions, l Limits) error {
	var d infoDict
	if err := opts.Unmarshal(raw, &d); err != nil {
		var te *bencode.UnmarshalTypeError
		if errors.As(err, &te) {
			return invalid("info dictionary: %v", err)
		}
		return fmt.Errorf("%w: info dictionary: %w", ErrInvalid, err)
	}
	switch d.MetaVersion {
	case 0, 1:
	case 2:
		if d.Pieces == nil {
			return fmt.Errorf("%w: BitTorrent v2-only torrent (BEP 52); only v1 and hybrid torrents are supported", ErrUnsupported)
		}
		info.Hybrid = true
	default:
		return fmt.Errorf("%w: meta version %d", ErrUnsupported, d.MetaVersion)
	}
	if d.Pieces == nil && d.FileTree != nil {
		return fmt.Errorf("%w: BitTorrent v2-only torrent (BEP 52); only v1 and hybrid torrents are supported", ErrUnsupported)
	}
	info.Name = d.Name
	info.PieceLength = d.PieceLength
	info.Pieces = d.Pieces
	info.Private = d.Private == 1
	info.Source = d.Source

	if d.Name == "" {
		return invalid("missing name")
	}
	if d.PieceLength <= 0 || d.PieceLength > MaxPieceLength || d.PieceLength%BlockSize != 0 {
		return invalid("piece length %d: must be a multiple of %d up to %d", d.PieceLength, BlockSize, MaxPieceLength)
	}
	if info.Hybrid && d.PieceLength&(d.PieceLength-1) != 0 {
		return invalid("piece length %d: a hybrid torrent's must be a power of two (BEP 52)", d.PieceLength)
	}
	if len(d.Pieces) == 0 || len(d.Pieces)%HashSize != 0 {
		return invalid("pieces is %d bytes, not a non-zero multiple of %d", len(d.Pieces), HashSize)
	}
	if n := len(d.Pieces) / HashSize; n > l.MaxPieces {
		return invalid("%d pieces, limit %d", n, l.MaxPieces)
	}
	if err := info.parseFiles(&d, l); err != nil {
		return err
	}
	want := (info.TotalLength + info.PieceLength - 1) / info.PieceLength
	if got := int64(len(info.Pieces) / HashSize); got != want {
		return invalid("%d piece hashes for %d bytes at piece length %d: want %d", got, info.TotalLength, info.PieceLength, want)
	}
	return nil
}

func (info *Info) parseFiles(d *infoDict, l Limits) error {
	switch {
	case d.Length != nil && d.Files != nil:
		return invalid("both length and files")
	case d.Length == nil && d.Files == nil:
		return invalid("neither length nor files")
	case d.Length != nil:
		if *d.Length <= 0 {
			return invalid("length %d", *d.Length)
		}
		safe, err := SafePath([]string{d.Name})
		if err != nil {
			return fmt.Errorf("%w: name: %w", ErrInvalid, err)
		}
		info.Files = []File{{Path: []string{d.Name}, SafePath: safe, Length: *d.Length}}
		info.TotalLength = *d.Length
		return nil
	}
	if len(d.Files) == 0 {
		return invalid("empty files list")
	}
	if len(d.Files) > l.MaxFiles {
		return invalid("%d files, limit %d", len(d.Files), l.MaxFiles)
	}
	info.MultiFile = true
	info.Files = make([]File, len(d.Files))
	var paths []string
	var total int64
	for i, fd := range d.Files {
		if fd.Length == nil {
			return invalid("file %d: missing length", i)
		}
		if *fd.Length < 0 {
			return invalid("file %d: negative length %d", i, *fd.Length)
		}
		if total > math.MaxInt64-*fd.Length {
			return invalid("file %d: total length overflows", i)
		}
		if len(fd.Path) == 0 {
			return invalid("file %d: empty path", i)
		}
		f := File{
			Path:        append([]string{d.Name}, fd.Path...),
			Length:      *fd.Length,
			Offset:      total,
			Attr:        fd.Attr,
			SymlinkPath: fd.SymlinkPath,
		}
		total += f.Length
		if !f.Padding() {
			safe, err := SafePath(f.Path)
			if err != nil {
				return fmt.Errorf("%w: file %d: %w", ErrInvalid, i, err)
			}
			f.SafePath = safe
			paths = append(paths, safe)
		}
		info.Files[i] = f
	}
	if total == 0 {
		return invalid("total length is 0")
	}
	if err := CheckUnique(paths); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	info.TotalLength = total
	return nil
}

// NumPieces is the number of pieces.
func (info *Info) NumPieces() int { return len(info.Pieces) / HashSize }

// PieceHash returns the SHA-1 that piece i must match.
func (info *Info) PieceHash(i int) Hash {
	return Hash(info.Pieces[i*HashSize : (i+1)*HashSize])
}

// PieceLen is the length of piece i: PieceLength for all but a short last
// piece.
func (info *Info) PieceLen(i int) int64 {
	if i == info.NumPieces()-1 {
		if rem := info.TotalLength % info.PieceLength; rem != 0 {
			return rem
		}
	}
	return info.PieceLength
}

// PieceRange is a half-open range of piece indices [Begin, End).
type PieceRange struct{ Begin, End int }

// Len is the number of pieces in the range.
func (r PieceRange) Len() int { return r.End - r.Begin }

// FilePieces is the range of pieces that hold any byte of file i. It is
// empty for an empty file.
func (info *Info) FilePieces(i int) PieceRange {
	f := info.Files[i]
	begin := int(f.Offset / info.PieceLength)
	if f.Length == 0 {
		return PieceRange{begin, begin}
	}
	end := int((f.Offset + f.Length + info.PieceLength - 1) / info.PieceLength)
	return PieceRange{begin, end}
}

// FileByPath finds a file by its path from the download root, components
// joined with "/" as DisplayPath gives them. Padding files are not found.
func (info *Info) FileByPath(path string) (int, bool) {
	for i, f := range info.Files {
		if !f.Padding() && f.DisplayPath() == path {
			return i, true
		}
	}
	return -1, false
}

// FileAt finds the file that holds byte offset off of the torrent's byte
// stream, skipping empty files.
func (info *Info) FileAt(off int64) (int, bool) {
	if off < 0 || off >= info.TotalLength {
		return -1, false
	}
	lo, hi := 0, len(info.Files)
	for lo < hi { // first file that ends after off
		mid := int(uint(lo+hi) >> 1)
		f := info.Files[mid]
		if f.Offset+f.Length <= off {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, lo < len(info.Files)
}
