package bencode

import (
	"errors"
	"fmt"
	"reflect"
)

// Sentinels for the ways an input can break BEP 3 or a limit. A *SyntaxError
// wraps exactly one of them, so callers branch with errors.Is.
var (
	ErrUnexpectedEOF   = errors.New("unexpected end of input")
	ErrExpectedValue   = errors.New("expected a value")
	ErrLeadingZero     = errors.New("leading zero")
	ErrNegativeZero    = errors.New("negative zero")
	ErrIntegerOverflow = errors.New("integer overflow")
	ErrBadInteger      = errors.New("malformed integer")
	ErrBadStringLength = errors.New("malformed string length")
	ErrKeyNotString    = errors.New("dictionary key is not a string")
	ErrUnsortedKeys    = errors.New("dictionary keys are not sorted")
	ErrDuplicateKey    = errors.New("duplicate dictionary key")
	ErrTrailingData    = errors.New("trailing data after value")
	ErrDepthExceeded   = errors.New("nesting depth limit exceeded")
	ErrStringTooLong   = errors.New("string length limit exceeded")
	ErrInputTooLarge   = errors.New("input size limit exceeded")
	ErrTooManyTokens   = errors.New("token count limit exceeded")
)

// SyntaxError reports input that is not strict, bounded bencode. Offset is
// the byte offset in the input where the problem was found.
type SyntaxError struct {
	Offset int64
	Err    error // one of the Err* sentinels above
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("bencode: %v at offset %d", e.Err, e.Offset)
}

func (e *SyntaxError) Unwrap() error { return e.Err }

// UnmarshalTypeError reports a well-formed value that cannot be stored in the
// Go value it was decoded into.
type UnmarshalTypeError struct {
	Value  string       // what the input held: "integer", "string", "list", "dictionary", or a detail
	Type   reflect.Type // the Go type it could not be stored in
	Offset int64        // where the value starts
	Field  string       // dotted path of struct fields leading to it, if any
}

func (e *UnmarshalTypeError) Error() string {
	where := ""
	if e.Field != "" {
		where = " into field " + e.Field
	}
	return fmt.Sprintf("bencode: cannot unmarshal %s%s of type %v at offset %d", e.Value, where, e.Type, e.Offset)
}

// InvalidUnmarshalError reports a target that is not a non-nil pointer.
type InvalidUnmarshalError struct {
	Type reflect.Type
}

func (e *InvalidUnmarshalError) Error() string {
	if e.Type == nil {
		return "bencode: Unmarshal(nil)"
	}
	if e.Type.Kind() != reflect.Pointer {
		return "bencode: Unmarshal(non-pointer " + e.Type.String() + ")"
	}
	return "bencode: Unmarshal(nil " + e.Type.String() + ")"
}

// UnsupportedTypeError reports a Go type that has no bencode form, such as a
// float, a channel, or a map whose keys are not strings.
type UnsupportedTypeError struct {
	Type reflect.Type
}

func (e *UnsupportedTypeError) Error() string {
	return "bencode: unsupported type " + e.Type.String()
}

// MarshalerError wraps an error returned by a Marshaler or Unmarshaler, or
// reports that a Marshaler produced bytes that are not canonical bencode.
type MarshalerError struct {
	Type reflect.Type
	Err  error
}

func (e *MarshalerError) Error() string {
	return "bencode: error calling method for type " + e.Type.String() + ": " + e.Err.Error()
}

func (e *MarshalerError) Unwrap() error { return e.Err }
