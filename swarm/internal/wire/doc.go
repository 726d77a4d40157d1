// Package wire encodes and decodes the BitTorrent peer wire protocol: the
// handshake (BEP 3), the length-prefixed messages of BEP 3, the fast extension
// (BEP 6), the DHT port message (BEP 5) and the framing of extension-protocol
// messages (BEP 10).
//
// It is a codec and nothing more. It works over an io.Reader or io.Writer,
// starts no goroutines, opens no sockets and sets no deadlines: the peer
// connection sets deadlines on its net.Conn and owns the loop that calls
// Decode. It does not parse the bencoded body of extended messages, does not
// implement MSE/PE encryption, and keeps no protocol state between messages.
// Rules that depend on state belong to the caller: whether the fast or
// extension protocol was negotiated, that a bitfield or have-all may only be
// the first message, that a block was actually requested, and how many
// requests a peer may queue.
//
// What the decoder does check, it checks before allocating or reading a
// payload of the declared size: every length prefix is bounded by
// Limits.MaxMessage, every fixed-size message must have its exact size, block
// lengths are bounded by Limits.MaxBlock, and, once the caller knows the
// torrent's shape, piece indices, bitfield sizes and block spans are checked
// against it. A violation is reported as a *ProtocolError, which matches
// ErrProtocol under errors.Is; the caller should drop the connection.
package wire
