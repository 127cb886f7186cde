package actors

import (
	"reflect"
	"testing"
	"time"
)

// The messages that carry a step's facts between actors are immutable
// values: no map, slice, pointer, channel, function or interface that a
// receiver could change under the sender (a time.Time's location is
// shared and never changed).
func TestStepMessagesAreValues(t *testing.T) {
	for _, msg := range []any{stepJob{}, outcomeDue{}, carriedApplied{}, workerFree{}, announce{}, pollTick{}, wake{}} {
		if path := mutablePart(reflect.TypeOf(msg), reflect.TypeOf(msg).Name()); path != "" {
			t.Errorf("%T holds a mutable part: %s", msg, path)
		}
	}
}

// mutablePart names the first field of t, by its path from name, through
// which a value of t can be changed once copied; "" when there is none.
func mutablePart(t reflect.Type, name string) string {
	if t == reflect.TypeFor[time.Time]() {
		return ""
	}
	switch t.Kind() {
	case reflect.Struct:
		for i := range t.NumField() {
			if p := mutablePart(t.Field(i).Type, name+"."+t.Field(i).Name); p != "" {
				return p
			}
		}
		return ""
	case reflect.Array:
		return mutablePart(t.Elem(), name+"[]")
	case reflect.Map, reflect.Slice, reflect.Pointer, reflect.Chan, reflect.Func, reflect.Interface, reflect.UnsafePointer:
		return name + " (" + t.Kind().String() + ")"
	default:
		return ""
	}
}
