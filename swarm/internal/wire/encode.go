package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
)

// writeBufferSize sizes the bufio.Writer that NewEncoder adds: room for a
// few blocks, so that small messages coalesce into large writes.
const writeBufferSize = 64 << 10

// errTooLong reports a message that a length prefix cannot frame.
var errTooLong = errors.New("wire: message longer than a length prefix can state")

// An Encoder writes peer wire messages to a buffered stream. Nothing reaches
// the underlying writer before the buffer fills or Flush is called; the
// caller flushes when it has nothing more to send right away.
//
// Variable-length parts (blocks, bitfields, payloads) are written from the
// caller's slices, not copied into a message buffer first.
type Encoder struct {
	bw *bufio.Writer // the stream; the Encoder is its only writer
}

// NewEncoder returns an Encoder writing to w. If w is a *bufio.Writer it is
// used as is; otherwise it is wrapped in one of 64 KiB.
func NewEncoder(w io.Writer) *Encoder {
	bw, ok := w.(*bufio.Writer)
	if !ok {
		bw = bufio.NewWriterSize(w, writeBufferSize)
	}
	return &Encoder{bw: bw}
}

// Encode writes m. See AppendMessage for the encoding; unlike it, Encode
// returns an error instead of panicking on a message too long to frame.
func (e *Encoder) Encode(m *Message) error {
	if !m.Keepalive && frameLen(layout(m)) > math.MaxUint32 {
		return errTooLong
	}
	head, tail := appendHead(e.bw.AvailableBuffer(), m)
	if _, err := e.bw.Write(head); err != nil {
		return fmt.Errorf("wire: writing %s message: %w", m.ID, err)
	}
	if len(tail) > 0 {
		if _, err := e.bw.Write(tail); err != nil {
			return fmt.Errorf("wire: writing %s message: %w", m.ID, err)
		}
	}
	return nil
}

// WritePiece writes a piece message whose block is written straight from
// block, without an intermediate copy into a message.
func (e *Encoder) WritePiece(index, begin uint32, block []byte) error {
	if uint64(len(block)) > maxPieceBlock {
		return errTooLong
	}
	if err := e.WritePieceHeader(index, begin, uint32(len(block))); err != nil {
		return err
	}
	if _, err := e.bw.Write(block); err != nil {
		return fmt.Errorf("wire: writing piece block: %w", err)
	}
	return nil
}

// WritePieceHeader writes the header of a piece message carrying length
// bytes of block. The caller must follow it with exactly length bytes,
// through Write, before writing anything else: a short block desynchronises
// the stream and the peer will drop the connection.
func (e *Encoder) WritePieceHeader(index, begin, length uint32) error {
	if length > maxPieceBlock {
		return errTooLong
	}
	if _, err := e.bw.Write(AppendPieceHeader(e.bw.AvailableBuffer(), index, begin, length)); err != nil {
		return fmt.Errorf("wire: writing piece header: %w", err)
	}
	return nil
}

// Write writes raw bytes to the stream. Its only proper use is the block
// that follows WritePieceHeader; anything else breaks the framing.
func (e *Encoder) Write(p []byte) (int, error) { return e.bw.Write(p) }

// Flush writes any buffered data to the underlying writer.
func (e *Encoder) Flush() error {
	if err := e.bw.Flush(); err != nil {
		return fmt.Errorf("wire: flushing: %w", err)
	}
	return nil
}

// Buffered returns the number of bytes written but not yet flushed.
func (e *Encoder) Buffered() int { return e.bw.Buffered() }
