package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// A bound is the range a numeric key must be in. Validate checks every
// bound, and docs/configuration.md shows each in its range column (a test
// compares them). Checks that relate keys to each other, or depend on
// another key (the retry policy, a disabled breaker), are Validate's own.
type bound struct {
	key      string  // dotted key path, e.g. consumer.workers
	min, max float64 // max +Inf: no upper bound
	// note, if set, follows the error in parentheses, e.g. what 0 means.
	note string
	// msg, if set, replaces the error: %[1]s is the value, %[2]s the
	// minimum, %[3]s the maximum.
	msg string
}

var noMax = math.Inf(1)

// bounds are the ranges of the configuration's numeric keys.
var bounds = []bound{
	{key: "streams.replicas", min: 1, max: 5},
	{key: "streams.dlq_max_age", min: 1, max: noMax},
	{key: "streams.dlq_max_bytes", min: 1, max: noMax},
	{key: "streams.max_msg_size", min: 0, max: 64 << 20, note: "0: automatic"},
	{key: "consumer.workers", min: 1, max: 10000},
	{key: "consumer.ack_wait", min: float64(time.Second), max: noMax},
	{key: "consumer.pull_wait", min: float64(100 * time.Millisecond), max: float64(time.Minute)},
	{key: "consumer.shutdown_timeout", min: 1, max: noMax},
	{key: "consumer.startup_timeout", min: 1, max: noMax},
	{key: "consumer.prefetch", min: 0, max: 1024},
	{key: "consumer.max_payload", min: 0, max: noMax, note: "0 means streams.max_msg_size"},
	{key: "consumer.poison_after", min: 1, max: 1000},
	{key: "consumer.max_inflight_bytes", min: 1 << 20, max: noMax},
	{key: "redelivery.max_deliveries", min: 1, max: noMax, note: "1 means no redelivery"},
	{key: "breaker.failure_threshold", min: 0, max: noMax, note: "0 turns it off"},
	{key: "breaker.failure_rate", min: 0, max: 1, msg: "%[1]s: want a share of failures from %[2]s (off) to %[3]s, e.g. 0.5"},
	{key: "tracing.sample_ratio", min: 0, max: 1, msg: "%[1]s: want a share of traces from %[2]s (none but those a producer's sampled trace continues) to %[3]s (all), e.g. 0.1"},
	// Retry.policy checks these, in the global retry block and in each
	// node's, where the block's policy uses the key.
	{key: "retry.attempts", min: 1, max: noMax},
	{key: "retry.multiplier", min: 1, max: noMax},
	{key: "retry.jitter", min: 0, max: 1},
}

// retryBounded reports whether Retry.policy checks the key's bound.
func retryBounded(key string) bool { return strings.HasPrefix(key, "retry.") }

// checkBounds reports every key outside its bound (but the retry keys).
func (c *Config) checkBounds() []error {
	var errs []error
	for _, b := range bounds {
		if v := c.lookup(b.key); !retryBounded(b.key) && !b.contains(v) {
			errs = append(errs, c.fieldErr(b.key, "%s", b.problem(v)))
		}
	}
	return errs
}

// outOfBound returns the problem of a retry block's key outside its bound, or nil.
func (r Retry) outOfBound(key string) error {
	for _, b := range bounds {
		if b.key == "retry."+key {
			if v := (&Config{Retry: r}).lookup(b.key); !b.contains(v) {
				return errors.New(b.problem(v))
			}
			return nil
		}
	}
	panic("config: no bound on retry." + key)
}

// contains reports whether v is within the bound; NaN is not.
func (b bound) contains(v reflect.Value) bool {
	x := asFloat(v)
	return x >= b.min && x <= b.max
}

// problem says why v is outside the bound.
func (b bound) problem(v reflect.Value) string {
	lo, hi := b.limits(v.Type())
	var msg string
	switch {
	case b.msg != "":
		return fmt.Sprintf(b.msg, formatValue(v), lo, hi)
	case b.min == 0 && b.max == noMax:
		msg = "must not be negative"
	case b.min == 1 && b.max == noMax && v.Type() == reflect.TypeFor[time.Duration]():
		msg = `must be a positive duration like "30s"`
	case b.min == 1 && b.max == noMax && v.Type() == reflect.TypeFor[ByteSize]():
		msg = "must be positive"
	case b.max == noMax:
		msg = formatValue(v) + " is under " + lo
	default:
		msg = formatValue(v) + " is outside " + lo + ".." + hi
	}
	if b.note != "" {
		msg += " (" + b.note + ")"
	}
	return msg
}

// rangeText is the bound as docs/configuration.md's range column writes it.
func (b bound) rangeText(t reflect.Type) string {
	lo, hi := b.limits(t)
	switch {
	case b.min == 0 && b.max == noMax:
		return "not negative"
	case b.min == 1 && b.max == noMax && (t == reflect.TypeFor[time.Duration]() || t == reflect.TypeFor[ByteSize]()):
		return "positive"
	case b.max == noMax:
		return "at least `" + lo + "`"
	}
	return "`" + lo + ".." + hi + "`"
}

// limits formats the bound's minimum and maximum as values of type t.
func (b bound) limits(t reflect.Type) (lo, hi string) {
	return formatValue(fromFloat(t, b.min)), formatValue(fromFloat(t, b.max))
}

// lookup returns the field at a dotted key path. It panics on a path that
// is not a key: bounds are declared in code, and a test checks them all.
func (c *Config) lookup(key string) reflect.Value {
	v := reflect.ValueOf(c).Elem()
	for _, name := range strings.Split(key, ".") {
		f, ok := fieldByKey(v.Type(), name)
		if !ok {
			panic("config: no key " + key)
		}
		v = v.FieldByIndex(f.Index)
	}
	return v
}

// fieldByKey finds the struct field whose yaml key is name.
func fieldByKey(t reflect.Type, name string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if key, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); key == name && f.IsExported() {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func asFloat(v reflect.Value) float64 {
	switch {
	case v.CanInt():
		return float64(v.Int())
	case v.CanFloat():
		return v.Float()
	}
	panic("config: bound on a key that is not a number: " + v.Type().String())
}

func fromFloat(t reflect.Type, x float64) reflect.Value {
	v := reflect.New(t).Elem()
	switch {
	case math.IsInf(x, 0):
	case v.CanInt():
		v.SetInt(int64(x))
	case v.CanFloat():
		v.SetFloat(x)
	}
	return v
}

// formatValue writes a value as the documentation and the errors do:
// durations without zero units (2m, not 2m0s), sizes with a unit but 0
// as 0, lists as [a, b].
func formatValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		return formatDuration(x)
	case ByteSize:
		if x == 0 {
			return "0"
		}
		return x.String()
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	if v.Kind() == reflect.Slice {
		items := make([]string, v.Len())
		for i := range items {
			items[i] = formatValue(v.Index(i))
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	return fmt.Sprint(v.Interface())
}

// formatDuration drops the zero units Duration.String writes: 2m, 336h, 1m30s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
