package task

import (
	"encoding/binary"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxMsgpackDepth is how deeply arrays and maps may nest in a msgpack value
// this package decodes: the same limit Go's encoding/json puts on JSON, so
// an envelope accepted in one encoding is accepted in the other.
const MaxMsgpackDepth = 10000

// CheckMsgpack walks the first msgpack value in data without decoding it and
// returns its length in bytes. It fails when the value is truncated, uses the
// reserved type byte 0xc1, nests deeper than MaxMsgpackDepth, or declares an
// array, map, string, binary or extension longer than the bytes that follow.
//
// Decode a msgpack value from an untrusted source only after CheckMsgpack
// accepts it: the msgpack decoder sizes a slice from the length the value
// declares, so a 6-byte array header claiming 4 billion elements would make
// it allocate 64 GiB and crash the process. Once every declared element has
// been seen to exist, what a decoder allocates is proportional to
// len(data), but by a factor of up to about 130 for values decoded into Go
// maps and slices (an empty map is one byte): DecodeMsgpack decodes params
// only after counting their values, see MaxParamValues.
func CheckMsgpack(data []byte) (int, error) {
	var values int
	return walkMsgpack(data, &values)
}

// CountValues counts the values (scalars, strings, containers and map
// keys) in a payload of the given encoding without decoding it, as
// MaxParamValues counts params: a caller that decodes untrusted values
// into Go maps and slices checks this first. Bytes payloads count 1; a
// malformed value counts -1.
func CountValues(payload []byte, enc PayloadEncoding) int {
	switch enc {
	case PayloadMsgpack:
		var n int
		if _, err := walkMsgpack(payload, &n); err != nil {
			return -1
		}
		return n
	case PayloadJSON:
		return countJSONValues(payload)
	}
	return 1
}

// walkMsgpack is CheckMsgpack that also adds to *values the number of
// values it walked: every scalar, array and map, and every map key.
func walkMsgpack(data []byte, values *int) (int, error) {
	var (
		count   int // values walked
		pos     int
		pending = 1   // values still to read in the innermost open container
		open    []int // pending counts of the enclosing containers
	)
	for {
		for pending == 0 {
			if len(open) == 0 {
				*values += count
				return pos, nil
			}
			pending, open = open[len(open)-1], open[:len(open)-1]
		}
		pending--
		count++
		if pos == len(data) {
			return 0, fmt.Errorf("msgpack: data ends at byte %d where a value should start", pos)
		}
		start, c := pos, data[pos]
		pos++
		// length reads the big-endian length of size bytes after the type byte.
		length := func(size int) (uint64, error) {
			if len(data)-pos < size {
				return 0, fmt.Errorf("msgpack: data ends inside the length of the value at byte %d", start)
			}
			var n uint64
			switch size {
			case 1:
				n = uint64(data[pos])
			case 2:
				n = uint64(binary.BigEndian.Uint16(data[pos:]))
			case 4:
				n = uint64(binary.BigEndian.Uint32(data[pos:]))
			}
			pos += size
			return n, nil
		}
		var (
			kind  = "number"
			skip  uint64 // bytes of a scalar after its header
			items uint64 // values inside a container (two per map entry)
			err   error
		)
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3: // fixints, nil, bool
		case c <= 0x8f:
			kind, items = "map", uint64(c&0x0f)
		case c <= 0x9f:
			kind, items = "array", uint64(c&0x0f)
		case c <= 0xbf:
			kind, skip = "string", uint64(c&0x1f)
		case c == 0xc1:
			return 0, fmt.Errorf("msgpack: byte %d is 0xc1, a type byte msgpack never uses", start)
		case c >= 0xc4 && c <= 0xc6: // bin8/16/32
			kind = "binary"
			skip, err = length(1 << (c - 0xc4))
		case c >= 0xd9 && c <= 0xdb: // str8/16/32
			kind = "string"
			skip, err = length(1 << (c - 0xd9))
		case c >= 0xc7 && c <= 0xc9: // ext8/16/32: length, then a type byte
			kind = "extension"
			skip, err = length(1 << (c - 0xc7))
			skip++
		case c == 0xca:
			skip = 4
		case c == 0xcb:
			skip = 8
		case c >= 0xcc && c <= 0xcf: // uint8..64
			skip = 1 << (c - 0xcc)
		case c >= 0xd0 && c <= 0xd3: // int8..64
			skip = 1 << (c - 0xd0)
		case c >= 0xd4 && c <= 0xd8: // fixext1..16: a type byte, then the data
			kind, skip = "extension", 1+1<<(c-0xd4)
		case c == 0xdc || c == 0xdd: // array16/32
			kind = "array"
			items, err = length(2 << (c - 0xdc))
		case c == 0xde || c == 0xdf: // map16/32
			kind = "map"
			items, err = length(2 << (c - 0xde))
		}
		if err != nil {
			return 0, err
		}
		left := uint64(len(data) - pos)
		switch kind {
		case "array", "map":
			unit := "elements"
			if kind == "map" {
				items, unit = 2*items, "entries"
			}
			// Every element takes at least one byte: an early, clear error
			// for a declared length the data cannot hold.
			if items > left {
				n := items
				if kind == "map" {
					n /= 2
				}
				return 0, fmt.Errorf("msgpack: the %s at byte %d declares %d %s but only %d bytes follow", kind, start, n, unit, left)
			}
			if items == 0 {
				continue
			}
			if len(open) >= MaxMsgpackDepth {
				return 0, fmt.Errorf("msgpack: the %s at byte %d nests deeper than %d levels", kind, start, MaxMsgpackDepth)
			}
			open = append(open, pending)
			pending = int(items)
		default:
			if skip > left {
				verb := "declares"
				if kind == "number" {
					verb = "needs"
				}
				return 0, fmt.Errorf("msgpack: the %s at byte %d %s %d bytes but only %d follow", kind, start, verb, skip, left)
			}
			pos += int(skip)
		}
	}
}

// UnmarshalMsgpack decodes one msgpack value from an untrusted source into v:
// it runs CheckMsgpack first, and turns a panic inside the msgpack library
// (msgpack/v5 panics, for one, on nil where a struct field is a time.Time)
// into an error. It does not reject trailing bytes.
func UnmarshalMsgpack(data []byte, v any) (err error) {
	if _, err := CheckMsgpack(data); err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("msgpack: the decoder failed on this value: %v", p)
		}
	}()
	return msgpack.Unmarshal(data, v)
}
