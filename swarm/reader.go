package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// DefaultReadahead is how far past its position a Reader asks for pieces.
const DefaultReadahead = 32 << 20

// Reader reads a torrent's verified bytes, in the torrent's byte stream or
// within one file. A Read blocks until the bytes it needs are verified, or
// until its context ends. Its position and readahead tell the engine which
// pieces are urgent, so reading from the start streams in order while the
// rest downloads, and several Readers at different offsets are served at
// once. A Reader is not safe for concurrent use; open one per goroutine.
type Reader struct {
	t         *Torrent
	ctx       context.Context
	id        int
	base      int64 // where the span starts in the torrent's byte stream
	size      int64 // length of the span
	pos       int64 // next byte to read, from base
	readahead int64
	reported  int64 // the position the engine was last told, -1 for none
	seeked    bool  // Seek moved the position since the last report
	closed    bool
}

// NewReader returns a Reader over the whole torrent's byte stream.
func (t *Torrent) NewReader(ctx context.Context) *Reader {
	return t.newReader(ctx, 0, t.info.TotalLength)
}

// NewFileReader returns a Reader over file i of the torrent.
func (t *Torrent) NewFileReader(ctx context.Context, i int) (*Reader, error) {
	if i < 0 || i >= len(t.info.Files) {
		return nil, fmt.Errorf("swarm: no file %d", i)
	}
	f := t.info.Files[i]
	return t.newReader(ctx, f.Offset, f.Length), nil
}

// NewRangeReader returns a Reader over n bytes of file i, from offset off
// in the file: an HTTP range. Its readahead stops at the range's end.
func (t *Torrent) NewRangeReader(ctx context.Context, i int, off, n int64) (*Reader, error) {
	if i < 0 || i >= len(t.info.Files) {
		return nil, fmt.Errorf("swarm: no file %d", i)
	}
	f := t.info.Files[i]
	if off < 0 || n < 0 || off > f.Length || n > f.Length-off {
		return nil, fmt.Errorf("swarm: range %d+%d outside file %d of %d bytes", off, n, i, f.Length)
	}
	return t.newReader(ctx, f.Offset+off, n), nil
}

func (t *Torrent) newReader(ctx context.Context, base, size int64) *Reader {
	id := int(t.nextReader.Add(1))
	return &Reader{t: t, ctx: ctx, id: id, base: base, size: size, readahead: DefaultReadahead, reported: -1}
}

// SetContext replaces the context that bounds Reads, as http.Request's
// context changes per request.
func (r *Reader) SetContext(ctx context.Context) { r.ctx = ctx }

// SetReadahead sets how many bytes past the position to fetch urgently.
func (r *Reader) SetReadahead(n int64) {
	r.readahead = max(n, 1)
	r.reported = -1
}

// Size is the length of the Reader's span.
func (r *Reader) Size() int64 { return r.size }

// Read reads verified bytes at the position.
func (r *Reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, ErrClosed
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	t := r.t
	for {
		abs := r.base + r.pos
		piece := int(abs / t.info.PieceLength)
		if err := r.report(); err != nil {
			return 0, err
		}
		if err := r.wait(piece); err != nil {
			return 0, err
		}
		// Read on through every verified piece the buffer reaches.
		n := int(t.verifiedUpTo(piece, min(r.base+r.size, abs+int64(len(p)))) - abs)
		n, err := t.storage.ReadAt(p[:n], abs)
		r.pos += int64(n)
		switch {
		case err == nil:
			return n, nil
		case n > 0:
			return n, nil // the rest of the buffer is for the next Read
		case t.reportLost(err):
			// Storage lost the piece: wait for it to be fetched again.
			t.waitLost(piece)
			continue
		case errors.Is(err, io.EOF):
			return 0, io.ErrUnexpectedEOF
		default:
			return 0, fmt.Errorf("swarm: reading verified data: %w", err)
		}
	}
}

// sendChunk bounds one sendfile call, so that progress shows, and a stream
// can stop, at least every few MiB.
const sendChunk = 4 << 20

// copyBufSize is the buffer WriteTo copies through when it cannot send
// straight from a file.
const copyBufSize = 256 << 10

// WriteTo writes the rest of the Reader's span to w, as io.WriterTo does;
// io.Copy uses it. When w reads from files (a socket, or net/http's
// ResponseWriter over one) and the storage is a FileStorage, verified
// ranges on disk go out with sendfile(2). Everything else is copied
// through a buffer, as Read gives it.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	s := fileSender{r: r}
	s.rf, _ = w.(io.ReaderFrom)
	s.fs, _ = r.t.storage.(FileStorage)
	defer s.close()
	var buf []byte
	var total int64
	for r.pos < r.size {
		if s.rf != nil && s.fs != nil {
			n, err := s.send()
			total += n
			if err != nil {
				return total, err
			}
			if n > 0 {
				continue
			}
		}
		if buf == nil {
			buf = make([]byte, copyBufSize)
		}
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// fileSender sends a Reader's verified bytes straight from its storage's
// file.
type fileSender struct {
	r  *Reader
	rf io.ReaderFrom
	fs FileStorage // nil once the file cannot be used
	f  *os.File    // opened at the first send
}

// send waits for the piece at the position, then sends the run of
// verified pieces from there (at most sendChunk) from the file. It sends
// nothing, and says so with 0 and no error, when the run is not all on
// disk: the caller then copies it.
func (s *fileSender) send() (int64, error) {
	r, t := s.r, s.r.t
	if r.closed {
		return 0, ErrClosed
	}
	pl := t.info.PieceLength
	abs := r.base + r.pos
	piece := int(abs / pl)
	if err := r.report(); err != nil {
		return 0, err
	}
	if err := r.wait(piece); err != nil {
		return 0, err
	}
	end := t.verifiedUpTo(piece, min(r.base+r.size, abs+sendChunk))
	if !s.fs.OnDisk(abs, end-abs) {
		return 0, nil
	}
	if s.f == nil {
		f, err := s.fs.OpenFile()
		if err != nil {
			s.fs = nil
			return 0, nil
		}
		s.f = f
	}
	if _, err := s.f.Seek(abs, io.SeekStart); err != nil {
		s.fs = nil
		return 0, nil
	}
	want := end - abs
	n, err := s.rf.ReadFrom(&io.LimitedReader{R: s.f, N: want})
	r.pos += n
	if err == nil && n < want {
		// The file is shorter than its verified pieces say: reading
		// through the storage finds the lost piece and fetches it again.
		s.fs = nil
	}
	return n, err
}

func (s *fileSender) close() {
	if s.f != nil {
		s.f.Close()
	}
}

// verifiedUpTo is where the run of verified pieces that starts with the
// verified piece 'piece' ends, or end if it reaches that far.
func (t *Torrent) verifiedUpTo(piece int, end int64) int64 {
	pl := t.info.PieceLength
	limit := int64(piece+1) * pl
	for limit < end && t.verified.has(int(limit/pl)) {
		limit += pl
	}
	return min(end, limit)
}

// report tells the engine the position when it has moved to another piece.
func (r *Reader) report() error {
	t := r.t
	pl := t.info.PieceLength
	abs := r.base + r.pos
	if r.reported >= 0 && r.reported/pl == abs/pl {
		return nil
	}
	// A new reader, or one that seeked: nothing is moving its way yet.
	jumped := r.reported < 0 || r.seeked
	r.seeked = false
	r.reported = abs
	end := min(r.base+r.size, abs+r.readahead)
	if !t.do(func() {
		t.s.picker.SetReader(r.id, abs, end-abs)
		rs := &readerState{piece: int(abs / pl), since: t.client.now()}
		t.s.readers[r.id] = rs
		t.updateInterestAll()
		t.fillAll()
		if jumped {
			t.rescueStart(rs)
		}
		if len(t.s.webSeeds) > 0 {
			t.webWake() // a web seed may have work now, without waiting a tick
		}
	}) {
		return ErrClosed
	}
	return nil
}

func (r *Reader) wait(piece int) error {
	t := r.t
	for !t.verified.has(piece) {
		ch := t.waitCh()
		if t.verified.has(piece) {
			break
		}
		select {
		case <-ch:
		case <-r.ctx.Done():
			return r.ctx.Err()
		case <-t.done:
			return ErrClosed
		}
	}
	return nil
}

// waitLost waits, briefly, for the loop to take a lost piece out of the
// verified set, so that the next wait blocks on its refetch.
func (t *Torrent) waitLost(piece int) {
	for range 100 {
		if !t.verified.has(piece) {
			return
		}
		select {
		case <-t.done:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Seek sets the position for the next Read, as io.Seeker does.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.pos + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, errors.New("swarm: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("swarm: negative position")
	}
	if abs != r.pos {
		r.seeked = true
	}
	r.pos = abs
	return abs, nil
}

// Close releases the Reader's claim on piece priority.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.t.do(func() {
		t := r.t
		t.s.picker.RemoveReader(r.id)
		delete(t.s.readers, r.id)
		t.updateInterestAll()
	})
	return nil
}
