package bencode

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
)

var marshalerType = reflect.TypeFor[Marshaler]()

// encodeState appends the canonical encoding of values to buf.
type encodeState struct {
	buf   []byte
	depth int // guards against cyclic pointers
}

// maxEncodeDepth stops a cyclic value before it exhausts the stack.
const maxEncodeDepth = 1000

func (e *encodeState) marshal(v any) error {
	if v == nil {
		return &UnsupportedTypeError{Type: reflect.TypeOf(v)}
	}
	return e.value(reflect.ValueOf(v))
}

func (e *encodeState) value(v reflect.Value) error {
	if !v.IsValid() {
		return &UnsupportedTypeError{Type: nil}
	}
	e.depth++
	defer func() { e.depth-- }()
	if e.depth > maxEncodeDepth {
		return &UnsupportedTypeError{Type: v.Type()}
	}
	if v.Type().Implements(marshalerType) {
		if v.Kind() == reflect.Pointer && v.IsNil() {
			return &UnsupportedTypeError{Type: v.Type()}
		}
		return e.marshaler(v.Interface().(Marshaler), v.Type())
	}
	if v.Kind() != reflect.Pointer && v.CanAddr() && v.Addr().Type().Implements(marshalerType) {
		return e.marshaler(v.Addr().Interface().(Marshaler), v.Type())
	}
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		e.int(v.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		e.buf = append(e.buf, 'i')
		e.buf = strconv.AppendUint(e.buf, v.Uint(), 10)
		e.buf = append(e.buf, 'e')
	case reflect.Bool:
		if v.Bool() {
			e.int(1)
		} else {
			e.int(0)
		}
	case reflect.String:
		e.string(v.String())
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			e.bytes(v.Bytes())
			return nil
		}
		return e.list(v)
	case reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			e.buf = strconv.AppendInt(e.buf, int64(v.Len()), 10)
			e.buf = append(e.buf, ':')
			for i := range v.Len() {
				e.buf = append(e.buf, byte(v.Index(i).Uint()))
			}
			return nil
		}
		return e.list(v)
	case reflect.Map:
		return e.mapValue(v)
	case reflect.Struct:
		return e.structValue(v)
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return &UnsupportedTypeError{Type: v.Type()}
		}
		return e.value(v.Elem())
	default:
		return &UnsupportedTypeError{Type: v.Type()}
	}
	return nil
}

func (e *encodeState) int(n int64) {
	e.buf = append(e.buf, 'i')
	e.buf = strconv.AppendInt(e.buf, n, 10)
	e.buf = append(e.buf, 'e')
}

func (e *encodeState) string(s string) {
	e.buf = strconv.AppendInt(e.buf, int64(len(s)), 10)
	e.buf = append(e.buf, ':')
	e.buf = append(e.buf, s...)
}

func (e *encodeState) bytes(b []byte) {
	e.buf = strconv.AppendInt(e.buf, int64(len(b)), 10)
	e.buf = append(e.buf, ':')
	e.buf = append(e.buf, b...)
}

func (e *encodeState) marshaler(m Marshaler, t reflect.Type) error {
	b, err := m.MarshalBencode()
	if err != nil {
		return &MarshalerError{Type: t, Err: err}
	}
	// A Marshaler's output is spliced in as is, so it must itself be one
	// strict, canonical value or the result would not be.
	if err := validate(b, Limits{MaxSize: 1 << 62, MaxStringLen: 1 << 62, MaxTokens: 1 << 62}); err != nil {
		return &MarshalerError{Type: t, Err: err}
	}
	e.buf = append(e.buf, b...)
	return nil
}

func (e *encodeState) list(v reflect.Value) error {
	e.buf = append(e.buf, 'l')
	for i := range v.Len() {
		if err := e.value(v.Index(i)); err != nil {
			return err
		}
	}
	e.buf = append(e.buf, 'e')
	return nil
}

func (e *encodeState) mapValue(v reflect.Value) error {
	if v.Type().Key().Kind() != reflect.String {
		return &UnsupportedTypeError{Type: v.Type()}
	}
	keys := v.MapKeys()
	slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
	e.buf = append(e.buf, 'd')
	for _, k := range keys {
		e.string(k.String())
		if err := e.value(v.MapIndex(k)); err != nil {
			return err
		}
	}
	e.buf = append(e.buf, 'e')
	return nil
}

func (e *encodeState) structValue(v reflect.Value) error {
	fields := cachedFields(v.Type())
	if fields.err != nil {
		return fields.err
	}
	e.buf = append(e.buf, 'd')
	for i := range fields.list {
		f := &fields.list[i]
		fv := v.Field(f.index)
		if f.omitEmpty && isEmpty(fv) {
			continue
		}
		e.string(f.name)
		if err := e.value(fv); err != nil {
			return err
		}
	}
	e.buf = append(e.buf, 'e')
	return nil
}

func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Slice, reflect.Map, reflect.String, reflect.Array:
		return v.Len() == 0
	case reflect.Pointer, reflect.Interface:
		return v.IsNil()
	case reflect.Bool:
		return !v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return v.Uint() == 0
	}
	return false
}
