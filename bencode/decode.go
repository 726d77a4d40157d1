package bencode

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strconv"
)

var errEmptyRaw = errors.New("bencode: empty RawMessage")

var (
	unmarshalerType = reflect.TypeFor[Unmarshaler]()
	rawMessageType  = reflect.TypeFor[RawMessage]()
)

// decodeState is one strict recursive-descent pass over a complete value.
// Recursion is bounded by lim.MaxDepth, so the stack is too.
type decodeState struct {
	data   []byte
	pos    int // next byte to read
	lim    Limits
	alias  bool // []byte results share data
	depth  int  // current nesting of lists and dictionaries
	tokens int  // values seen so far
	base   int64
	field  []string // struct field path, for error messages
}

func (d *decodeState) syntax(err error) error {
	return &SyntaxError{Offset: d.base + int64(d.pos), Err: err}
}

func (d *decodeState) syntaxAt(pos int, err error) error {
	return &SyntaxError{Offset: d.base + int64(pos), Err: err}
}

func (d *decodeState) typeError(what string, t reflect.Type, start int) error {
	f := ""
	for i, s := range d.field {
		if i > 0 {
			f += "."
		}
		f += s
	}
	return &UnmarshalTypeError{Value: what, Type: t, Offset: d.base + int64(start), Field: f}
}

func (d *decodeState) unmarshal(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return &InvalidUnmarshalError{Type: reflect.TypeOf(v)}
	}
	if err := d.value(rv.Elem()); err != nil {
		return err
	}
	if d.pos != len(d.data) {
		return d.syntax(ErrTrailingData)
	}
	return nil
}

// token counts one value against the token limit.
func (d *decodeState) token() error {
	d.tokens++
	if d.tokens > d.lim.MaxTokens {
		return d.syntax(ErrTooManyTokens)
	}
	return nil
}

func (d *decodeState) peek() (byte, error) {
	if d.pos >= len(d.data) {
		return 0, d.syntax(ErrUnexpectedEOF)
	}
	return d.data[d.pos], nil
}

// readInt reads "i<digits>e" strictly.
func (d *decodeState) readInt() (int64, error) {
	if err := d.token(); err != nil {
		return 0, err
	}
	d.pos++ // 'i'
	start := d.pos
	neg := false
	if d.pos < len(d.data) && d.data[d.pos] == '-' {
		neg = true
		d.pos++
	}
	digits := d.pos
	var u uint64
	for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
		c := uint64(d.data[d.pos] - '0')
		if u > (math.MaxUint64-c)/10 {
			return 0, d.syntaxAt(start, ErrIntegerOverflow)
		}
		u = u*10 + c
		d.pos++
	}
	if d.pos >= len(d.data) {
		return 0, d.syntax(ErrUnexpectedEOF)
	}
	if d.data[d.pos] != 'e' || d.pos == digits {
		return 0, d.syntax(ErrBadInteger)
	}
	n := d.pos - digits
	if d.data[digits] == '0' {
		if n > 1 {
			return 0, d.syntaxAt(start, ErrLeadingZero)
		}
		if neg {
			return 0, d.syntaxAt(start, ErrNegativeZero)
		}
	}
	d.pos++ // 'e'
	if neg {
		if u > 1<<63 {
			return 0, d.syntaxAt(start, ErrIntegerOverflow)
		}
		return -int64(u), nil
	}
	if u > math.MaxInt64 {
		return 0, d.syntaxAt(start, ErrIntegerOverflow)
	}
	return int64(u), nil
}

// readString reads "<len>:<bytes>" strictly and returns a slice of the input.
func (d *decodeState) readString() ([]byte, error) {
	if err := d.token(); err != nil {
		return nil, err
	}
	start := d.pos
	n := 0
	for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
		c := int(d.data[d.pos] - '0')
		if n > d.lim.MaxStringLen/10 || n*10 > d.lim.MaxStringLen-c { // checked before it can overflow
			return nil, d.syntaxAt(start, ErrStringTooLong)
		}
		n = n*10 + c
		d.pos++
	}
	if d.pos >= len(d.data) {
		return nil, d.syntax(ErrUnexpectedEOF)
	}
	if d.data[d.pos] != ':' || d.pos == start {
		return nil, d.syntax(ErrBadStringLength)
	}
	if d.data[start] == '0' && d.pos-start > 1 {
		return nil, d.syntaxAt(start, ErrLeadingZero)
	}
	d.pos++ // ':'
	if n > len(d.data)-d.pos {
		return nil, d.syntaxAt(len(d.data), ErrUnexpectedEOF)
	}
	s := d.data[d.pos : d.pos+n : d.pos+n]
	d.pos += n
	return s, nil
}

// enter opens a list or dictionary.
func (d *decodeState) enter() error {
	if err := d.token(); err != nil {
		return err
	}
	d.depth++
	if d.depth > d.lim.MaxDepth {
		return d.syntax(ErrDepthExceeded)
	}
	d.pos++ // 'l' or 'd'
	return nil
}

// more reports whether a list or dictionary has another item, consuming its
// closing 'e' when it does not.
func (d *decodeState) more() (bool, error) {
	c, err := d.peek()
	if err != nil {
		return false, err
	}
	if c == 'e' {
		d.pos++
		d.depth--
		return false, nil
	}
	return true, nil
}

// dictKey reads the next key of a dictionary and checks it sorts strictly
// after prev.
func (d *decodeState) dictKey(prev []byte, first bool) ([]byte, error) {
	c, err := d.peek()
	if err != nil {
		return nil, err
	}
	if c < '0' || c > '9' {
		return nil, d.syntax(ErrKeyNotString)
	}
	start := d.pos
	k, err := d.readString()
	if err != nil {
		return nil, err
	}
	if !first {
		switch cmp := bytes.Compare(prev, k); {
		case cmp == 0:
			return nil, d.syntaxAt(start, ErrDuplicateKey)
		case cmp > 0:
			return nil, d.syntaxAt(start, ErrUnsortedKeys)
		}
	}
	return k, nil
}

// skip checks one value strictly and moves past it.
func (d *decodeState) skip() error {
	c, err := d.peek()
	if err != nil {
		return err
	}
	switch {
	case c == 'i':
		_, err := d.readInt()
		return err
	case c >= '0' && c <= '9':
		_, err := d.readString()
		return err
	case c == 'l':
		if err := d.enter(); err != nil {
			return err
		}
		for {
			ok, err := d.more()
			if err != nil || !ok {
				return err
			}
			if err := d.skip(); err != nil {
				return err
			}
		}
	case c == 'd':
		if err := d.enter(); err != nil {
			return err
		}
		var prev []byte
		for first := true; ; first = false {
			ok, err := d.more()
			if err != nil || !ok {
				return err
			}
			if prev, err = d.dictKey(prev, first); err != nil {
				return err
			}
			if err := d.skip(); err != nil {
				return err
			}
		}
	default:
		return d.syntax(ErrExpectedValue)
	}
}

// bytesOut returns s as the caller may keep it.
func (d *decodeState) bytesOut(s []byte) []byte {
	if d.alias {
		return s
	}
	return bytes.Clone(s)
}

// value decodes one value into v.
func (d *decodeState) value(v reflect.Value) error {
	start := d.pos
	// Unmarshalers, RawMessage included, take the raw bytes of the value.
	if v.Kind() != reflect.Pointer && v.CanAddr() {
		if v.Type() == rawMessageType {
			if err := d.skip(); err != nil {
				return err
			}
			v.SetBytes(d.bytesOut(d.data[start:d.pos]))
			return nil
		}
		if v.Addr().Type().Implements(unmarshalerType) {
			if err := d.skip(); err != nil {
				return err
			}
			if err := v.Addr().Interface().(Unmarshaler).UnmarshalBencode(d.data[start:d.pos]); err != nil {
				return &MarshalerError{Type: v.Type(), Err: err}
			}
			return nil
		}
	}
	c, err := d.peek()
	if err != nil {
		return err
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.value(v.Elem())
	case reflect.Interface:
		if v.NumMethod() != 0 {
			return d.typeError(kindName(c), v.Type(), start)
		}
		x, err := d.anyValue()
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(x))
		return nil
	}
	switch {
	case c == 'i':
		n, err := d.readInt()
		if err != nil {
			return err
		}
		return d.storeInt(v, n, start)
	case c >= '0' && c <= '9':
		s, err := d.readString()
		if err != nil {
			return err
		}
		return d.storeString(v, s, start)
	case c == 'l':
		return d.list(v, start)
	case c == 'd':
		return d.dict(v, start)
	default:
		return d.syntax(ErrExpectedValue)
	}
}

func kindName(c byte) string {
	switch {
	case c == 'i':
		return "integer"
	case c == 'l':
		return "list"
	case c == 'd':
		return "dictionary"
	default:
		return "string"
	}
}

func (d *decodeState) storeInt(v reflect.Value, n int64, start int) error {
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if v.OverflowInt(n) {
			return d.typeError("integer "+strconv.FormatInt(n, 10), v.Type(), start)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if n < 0 || v.OverflowUint(uint64(n)) {
			return d.typeError("integer "+strconv.FormatInt(n, 10), v.Type(), start)
		}
		v.SetUint(uint64(n))
	case reflect.Bool:
		if n != 0 && n != 1 {
			return d.typeError("integer "+strconv.FormatInt(n, 10), v.Type(), start)
		}
		v.SetBool(n == 1)
	default:
		return d.typeError("integer", v.Type(), start)
	}
	return nil
}

func (d *decodeState) storeString(v reflect.Value, s []byte, start int) error {
	switch v.Kind() {
	case reflect.String:
		v.SetString(string(s))
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.Uint8 {
			return d.typeError("string", v.Type(), start)
		}
		v.SetBytes(d.bytesOut(s))
	case reflect.Array:
		if v.Type().Elem().Kind() != reflect.Uint8 {
			return d.typeError("string", v.Type(), start)
		}
		if v.Len() != len(s) {
			return d.typeError("string of length "+strconv.Itoa(len(s)), v.Type(), start)
		}
		reflect.Copy(v, reflect.ValueOf(s))
	default:
		return d.typeError("string", v.Type(), start)
	}
	return nil
}

func (d *decodeState) list(v reflect.Value, start int) error {
	switch v.Kind() {
	case reflect.Slice, reflect.Array:
	default:
		return d.typeError("list", v.Type(), start)
	}
	if err := d.enter(); err != nil {
		return err
	}
	i := 0
	if v.Kind() == reflect.Slice {
		v.SetLen(0)
	}
	for {
		ok, err := d.more()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if v.Kind() == reflect.Array {
			if i >= v.Len() {
				return d.typeError("list longer than "+strconv.Itoa(v.Len()), v.Type(), start)
			}
			if err := d.value(v.Index(i)); err != nil {
				return err
			}
		} else {
			// Grow one element at a time: the input, not a count in it,
			// decides how much is allocated.
			v.Grow(1)
			v.SetLen(i + 1)
			if err := d.value(v.Index(i)); err != nil {
				return err
			}
		}
		i++
	}
	if v.Kind() == reflect.Array && i != v.Len() {
		return d.typeError("list of length "+strconv.Itoa(i), v.Type(), start)
	}
	if v.Kind() == reflect.Slice && v.IsNil() {
		v.Set(reflect.MakeSlice(v.Type(), 0, 0))
	}
	return nil
}

func (d *decodeState) dict(v reflect.Value, start int) error {
	var fields *structFields
	switch v.Kind() {
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return d.typeError("dictionary", v.Type(), start)
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
	case reflect.Struct:
		fields = cachedFields(v.Type())
	default:
		return d.typeError("dictionary", v.Type(), start)
	}
	if err := d.enter(); err != nil {
		return err
	}
	var prev []byte
	for first := true; ; first = false {
		ok, err := d.more()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		key, err := d.dictKey(prev, first)
		if err != nil {
			return err
		}
		prev = key
		if fields == nil {
			elem := reflect.New(v.Type().Elem()).Elem()
			d.field = append(d.field, string(key))
			if err := d.value(elem); err != nil {
				return err
			}
			d.field = d.field[:len(d.field)-1]
			v.SetMapIndex(reflect.ValueOf(string(key)).Convert(v.Type().Key()), elem)
			continue
		}
		f := fields.byName(key)
		if f == nil {
			if err := d.skip(); err != nil {
				return err
			}
			continue
		}
		d.field = append(d.field, f.goName)
		if err := d.value(v.Field(f.index)); err != nil {
			return err
		}
		d.field = d.field[:len(d.field)-1]
	}
}

// anyValue decodes into the generic form: int64, string, []any and
// map[string]any.
func (d *decodeState) anyValue() (any, error) {
	c, err := d.peek()
	if err != nil {
		return nil, err
	}
	switch {
	case c == 'i':
		return d.readInt()
	case c >= '0' && c <= '9':
		s, err := d.readString()
		return string(s), err
	case c == 'l':
		if err := d.enter(); err != nil {
			return nil, err
		}
		l := []any{}
		for {
			ok, err := d.more()
			if err != nil {
				return nil, err
			}
			if !ok {
				return l, nil
			}
			x, err := d.anyValue()
			if err != nil {
				return nil, err
			}
			l = append(l, x)
		}
	case c == 'd':
		if err := d.enter(); err != nil {
			return nil, err
		}
		m := map[string]any{}
		var prev []byte
		for first := true; ; first = false {
			ok, err := d.more()
			if err != nil {
				return nil, err
			}
			if !ok {
				return m, nil
			}
			if prev, err = d.dictKey(prev, first); err != nil {
				return nil, err
			}
			x, err := d.anyValue()
			if err != nil {
				return nil, err
			}
			m[string(prev)] = x
		}
	default:
		return nil, d.syntax(ErrExpectedValue)
	}
}
