package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"github.com/tbproxy/tbproxy/metainfo"
)

// The completion record is the durable half of an entry's verified-piece
// set. It is small, rewritten whole (temp file, fsync, rename, fsync of the
// directory) and checksummed, so that a torn or altered record is detected
// and never trusted. Layout, little-endian:
//
//	0   magic "TBPCACHE"
//	8   version (uint32)
//	12  number of pieces (uint32)
//	16  info-hash (20 bytes)
//	36  torrent length (int64)
//	44  data file size when recorded (int64)
//	52  data file mtime when recorded (int64, Unix ns)
//	60  last use (int64, Unix ns)
//	68  completion time (int64, Unix ns; 0 while incomplete)
//	76  bytes uploaded while cached (int64)
//	84  verified pieces, BEP 3 bitfield layout
//	…   CRC-32C of everything before it (uint32)
const (
	recordMagic   = "TBPCACHE"
	recordVersion = 1
	recordHeader  = 84
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadRecord is wrapped by every decoding failure of a completion record.
var errBadRecord = errors.New("cache: bad completion record")

// record is one decoded completion record.
type record struct {
	infoHash    metainfo.Hash
	totalLength int64
	dataSize    int64 // the data file's size when the record was written
	dataMtime   int64 // the data file's mtime (Unix ns) when the record was written
	lastUse     int64 // Unix ns
	completed   int64 // Unix ns; 0 while incomplete
	uploaded    int64
	verified    bitset
}

func recordLen(pieces int) int { return recordHeader + (pieces+7)/8 + 4 }

func (r *record) marshal() []byte {
	b := make([]byte, 0, recordLen(r.verified.n))
	b = append(b, recordMagic...)
	b = binary.LittleEndian.AppendUint32(b, recordVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(r.verified.n))
	b = append(b, r.infoHash[:]...)
	for _, v := range []int64{r.totalLength, r.dataSize, r.dataMtime, r.lastUse, r.completed, r.uploaded} {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	b = r.verified.appendTo(b)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeRecord checks and decodes a record for a torrent of info.
func decodeRecord(b []byte, ih metainfo.Hash, info *metainfo.Info) (*record, error) {
	n := info.NumPieces()
	if len(b) < recordHeader+4 {
		return nil, fmt.Errorf("%w: %d bytes", errBadRecord, len(b))
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", errBadRecord)
	}
	if string(b[:8]) != recordMagic {
		return nil, fmt.Errorf("%w: bad magic", errBadRecord)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != recordVersion {
		return nil, fmt.Errorf("%w: version %d", errBadRecord, v)
	}
	if got := binary.LittleEndian.Uint32(b[12:]); int64(got) != int64(n) {
		return nil, fmt.Errorf("%w: %d pieces, torrent has %d", errBadRecord, got, n)
	}
	r := &record{infoHash: metainfo.Hash(b[16:36])}
	if r.infoHash != ih {
		return nil, fmt.Errorf("%w: info-hash %s, want %s", errBadRecord, r.infoHash, ih)
	}
	fields := []*int64{&r.totalLength, &r.dataSize, &r.dataMtime, &r.lastUse, &r.completed, &r.uploaded}
	for k, p := range fields {
		*p = int64(binary.LittleEndian.Uint64(b[36+8*k:]))
	}
	if r.totalLength != info.TotalLength {
		return nil, fmt.Errorf("%w: length %d, torrent has %d", errBadRecord, r.totalLength, info.TotalLength)
	}
	bits, ok := decodeBitset(body[recordHeader:], n)
	if !ok {
		return nil, fmt.Errorf("%w: bad bitfield", errBadRecord)
	}
	r.verified = bits
	return r, nil
}

// writeFileAtomic replaces dir/name with data so that a crash leaves either
// the old file or the new one: it writes a temporary file, syncs it, renames
// it over name and syncs the directory.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// syncFile makes a file's bytes durable.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a directory's entries (a rename, a new file) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
