// Package metainfo parses, validates and builds BitTorrent metainfo
// (.torrent) files and magnet URIs.
//
// Parsing is strict and bounded: the info-hash is the SHA-1 of the raw info
// bytes, every length and count is checked for overflow and consistency
// before anything is sized from it, and file paths from a torrent only ever
// become safe relative paths. The package reads no network and writes no
// files; Build reads the files it hashes.
package metainfo

import (
	"bytes"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
)

// Limits bound what Parse accepts. A zero field takes its default.
type Limits struct {
	// MaxSize is the largest .torrent file in bytes; 0 means 16 MiB.
	MaxSize int64
	// MaxPieces is the most pieces a torrent may have; 0 means 2^21.
	MaxPieces int
	// MaxFiles is the most files a torrent may list; 0 means 100,000.
	MaxFiles int
}

// Defaults for Limits, and the fixed bounds on piece length.
const (
	DefaultMaxSize   = 16 << 20
	DefaultMaxPieces = 1 << 21
	DefaultMaxFiles  = 100_000

	// BlockSize is the unit of transfer between peers; a piece length is a
	// whole number of blocks.
	BlockSize = 16 << 10
	// MaxPieceLength is the largest piece length accepted.
	MaxPieceLength = 64 << 20

	// MaxWebSeeds is the most url-list entries (BEP 19) a torrent may
	// carry; each becomes an HTTP source with its own workers.
	MaxWebSeeds = 100
	// MaxTrackers is the most tracker URLs announce-list (BEP 12) may
	// carry, over all its tiers.
	MaxTrackers = 200
)

func (l Limits) withDefaults() Limits {
	if l.MaxSize <= 0 {
		l.MaxSize = DefaultMaxSize
	}
	if l.MaxPieces <= 0 {
		l.MaxPieces = DefaultMaxPieces
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// Sentinel errors that callers branch on. Validation failures wrap
// ErrInvalid; a v2-only torrent wraps ErrUnsupported.
var (
	ErrInvalid     = errors.New("metainfo: invalid torrent")
	ErrUnsupported = errors.New("metainfo: unsupported torrent")
	ErrTooLarge    = errors.New("metainfo: torrent file too large")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// MetaInfo is a parsed .torrent file.
type MetaInfo struct {
	// InfoBytes is the exact encoding of the info dictionary; InfoHash is
	// its SHA-1, and it is what is served to peers that ask for metadata.
	InfoBytes bencode.RawMessage
	InfoHash  Hash
	Info      Info

	Announce     string     // the single tracker of BEP 3; may be empty
	AnnounceList [][]string // BEP 12 tiers; when present it supersedes Announce
	URLList      []string   // BEP 19 web seeds
	CreationDate time.Time  // zero when absent
	Comment      string
	CreatedBy    string
}

// torrentDict is the outer dictionary. Fields that real torrents get wrong
// in harmless ways are kept raw and read leniently; the info dictionary is
// decoded strictly.
type torrentDict struct {
	Announce     bencode.RawMessage `bencode:"announce,omitempty"`
	AnnounceList bencode.RawMessage `bencode:"announce-list,omitempty"`
	Comment      bencode.RawMessage `bencode:"comment,omitempty"`
	CreatedBy    bencode.RawMessage `bencode:"created by,omitempty"`
	CreationDate bencode.RawMessage `bencode:"creation date,omitempty"`
	Info         bencode.RawMessage `bencode:"info"`
	URLList      bencode.RawMessage `bencode:"url-list,omitempty"`
}

// Parse parses a .torrent file with default limits. It copies data once, so
// the caller may reuse it.
func Parse(data []byte) (*MetaInfo, error) { return Limits{}.Parse(data) }

// Read reads and parses a .torrent file with default limits, reading no
// more than the size limit allows.
func Read(r io.Reader) (*MetaInfo, error) { return Limits{}.Read(r) }

// Parse parses a .torrent file within l. It copies data once, so the caller
// may reuse it.
func (l Limits) Parse(data []byte) (*MetaInfo, error) {
	l = l.withDefaults()
	if int64(len(data)) > l.MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), l.MaxSize)
	}
	return l.parseOwned(bytes.Clone(data))
}

// Read reads and parses a .torrent file within l.
func (l Limits) Read(r io.Reader) (*MetaInfo, error) {
	l = l.withDefaults()
	data, err := io.ReadAll(io.LimitReader(r, l.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("metainfo: reading torrent: %w", err)
	}
	if int64(len(data)) > l.MaxSize {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, l.MaxSize)
	}
	return l.parseOwned(data)
}

// parseOwned parses data that no one else holds: the result aliases it, so
// the piece hashes are never copied.
func (l Limits) parseOwned(data []byte) (*MetaInfo, error) {
	opts := bencode.DecodeOptions{Alias: true, Limits: bencode.Limits{MaxSize: l.MaxSize, MaxStringLen: int(l.MaxSize)}}
	var td torrentDict
	if err := opts.Unmarshal(data, &td); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(td.Info) == 0 {
		return nil, invalid("no info dictionary")
	}
	m := &MetaInfo{InfoBytes: td.Info, InfoHash: sha1.Sum(td.Info)}
	if err := m.Info.parse(td.Info, opts, l); err != nil {
		return nil, err
	}
	m.Announce = rawString(td.Announce)
	var err error
	if m.AnnounceList, err = rawTiers(td.AnnounceList); err != nil {
		return nil, err
	}
	if m.URLList, err = rawStrings(td.URLList); err != nil {
		return nil, err
	}
	m.Comment = rawString(td.Comment)
	m.CreatedBy = rawString(td.CreatedBy)
	var created int64
	if td.CreationDate != nil && bencode.Unmarshal(td.CreationDate, &created) == nil && created > 0 {
		m.CreationDate = time.Unix(created, 0).UTC()
	}
	return m, nil
}

// rawString reads a string field that is optional; any other type counts
// as absent.
func rawString(raw bencode.RawMessage) string {
	var s string
	if raw != nil && bencode.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}

// rawStrings reads url-list, a string or a list of strings, dropping
// empty strings and items of any other type. More than MaxWebSeeds
// strings is an error.
func rawStrings(raw bencode.RawMessage) ([]string, error) {
	if raw == nil {
		return nil, nil
	}
	if s := rawString(raw); s != "" {
		return []string{s}, nil
	}
	var items []bencode.RawMessage
	if bencode.Unmarshal(raw, &items) != nil {
		return nil, nil
	}
	var out []string
	for _, it := range items {
		if s := rawString(it); s != "" {
			if len(out) == MaxWebSeeds {
				return nil, invalid("url-list has more than %d web seeds", MaxWebSeeds)
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// rawTiers reads announce-list, dropping malformed tiers and empty ones.
// More than MaxTrackers URLs over all tiers is an error.
func rawTiers(raw bencode.RawMessage) ([][]string, error) {
	var tiers []bencode.RawMessage
	if raw == nil || bencode.Unmarshal(raw, &tiers) != nil {
		return nil, nil
	}
	var out [][]string
	n := 0
	for _, t := range tiers {
		var items []bencode.RawMessage
		if bencode.Unmarshal(t, &items) != nil {
			continue
		}
		var tier []string
		for _, it := range items {
			if s := rawString(it); s != "" {
				if n == MaxTrackers {
					return nil, invalid("announce-list has more than %d trackers", MaxTrackers)
				}
				n++
				tier = append(tier, s)
			}
		}
		if len(tier) > 0 {
			out = append(out, tier)
		}
	}
	return out, nil
}

// Trackers returns the tracker tiers to use: announce-list when present
// (BEP 12), otherwise announce as a tier of its own.
func (m *MetaInfo) Trackers() [][]string {
	if len(m.AnnounceList) > 0 {
		return m.AnnounceList
	}
	if m.Announce != "" {
		return [][]string{{m.Announce}}
	}
	return nil
}

// Marshal encodes m as a .torrent file. The info dictionary is written as
// its exact InfoBytes, so the info-hash is preserved.
func (m *MetaInfo) Marshal() ([]byte, error) {
	type out struct {
		Announce     string             `bencode:"announce,omitempty"`
		AnnounceList [][]string         `bencode:"announce-list,omitempty"`
		Comment      string             `bencode:"comment,omitempty"`
		CreatedBy    string             `bencode:"created by,omitempty"`
		CreationDate int64              `bencode:"creation date,omitempty"`
		Info         bencode.RawMessage `bencode:"info"`
		URLList      []string           `bencode:"url-list,omitempty"`
	}
	o := out{
		Announce:     m.Announce,
		AnnounceList: m.AnnounceList,
		Comment:      m.Comment,
		CreatedBy:    m.CreatedBy,
		Info:         m.InfoBytes,
		URLList:      m.URLList,
	}
	if !m.CreationDate.IsZero() {
		o.CreationDate = m.CreationDate.Unix()
	}
	return bencode.Marshal(o)
}

// Magnet returns a magnet URI for m, with its name, length, trackers and
// web seeds.
func (m *MetaInfo) Magnet() Magnet {
	mg := Magnet{InfoHash: m.InfoHash, Name: m.Info.Name, Length: m.Info.TotalLength, WebSeeds: m.URLList}
	for _, tier := range m.Trackers() {
		mg.Trackers = append(mg.Trackers, tier...)
	}
	return mg
}
