package bencode

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// field is one struct field that takes part in encoding.
type field struct {
	name      string // dictionary key
	goName    string // Go field name, for error messages
	index     int
	omitEmpty bool
}

// structFields is what encoding and decoding need to know about a struct
// type: its fields sorted by key, the order canonical encoding writes them.
type structFields struct {
	list []field
	err  error // a struct that names two fields alike cannot be encoded
}

func (s *structFields) byName(key []byte) *field {
	i, ok := slices.BinarySearchFunc(s.list, key, func(f field, k []byte) int {
		return bytes.Compare([]byte(f.name), k)
	})
	if !ok {
		return nil
	}
	return &s.list[i]
}

// fieldCache memoises structFields per type. It is the package's only
// shared state: derived purely from types, never from input.
var fieldCache sync.Map // reflect.Type -> *structFields

func cachedFields(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	f, _ := fieldCache.LoadOrStore(t, typeFields(t))
	return f.(*structFields)
}

func typeFields(t reflect.Type) *structFields {
	s := &structFields{}
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("bencode")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = sf.Name
		}
		s.list = append(s.list, field{
			name:      name,
			goName:    sf.Name,
			index:     i,
			omitEmpty: opts == "omitempty",
		})
	}
	slices.SortFunc(s.list, func(a, b field) int { return strings.Compare(a.name, b.name) })
	for i := 1; i < len(s.list); i++ {
		if s.list[i].name == s.list[i-1].name {
			s.err = &structTagError{t: t, name: s.list[i].name}
		}
	}
	return s
}

type structTagError struct {
	t    reflect.Type
	name string
}

func (e *structTagError) Error() string {
	return "bencode: struct " + e.t.String() + " has two fields named " + e.name
}
