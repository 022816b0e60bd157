package runtime

import (
	"reflect"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// copySpec deep-copies a spec a backend handed out (one that went through
// JSON already), field by field: what Info gives its caller is the
// caller's own. cloneSpec's round trip through JSON, which Create needs to
// refuse what JSON cannot carry, cost a container's status more than the
// rest of it.
func copySpec(s *specs.Spec) *specs.Spec {
	if s == nil {
		return nil
	}
	return deepCopy(reflect.ValueOf(s)).Interface().(*specs.Spec)
}

// deepCopy copies v and everything it points to; unexported fields (the
// spec has none) are left zero, as JSON would leave them.
func deepCopy(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		c := reflect.New(v.Type().Elem())
		c.Elem().Set(deepCopy(v.Elem()))
		return c
	case reflect.Interface:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		c := reflect.New(v.Type()).Elem()
		c.Set(deepCopy(v.Elem()))
		return c
	case reflect.Struct:
		c := reflect.New(v.Type()).Elem()
		for i := range v.NumField() {
			if f := c.Field(i); f.CanSet() {
				f.Set(deepCopy(v.Field(i)))
			}
		}
		return c
	case reflect.Slice:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			c.Index(i).Set(deepCopy(v.Index(i)))
		}
		return c
	case reflect.Array:
		c := reflect.New(v.Type()).Elem()
		for i := range v.Len() {
			c.Index(i).Set(deepCopy(v.Index(i)))
		}
		return c
	case reflect.Map:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		c := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			c.SetMapIndex(deepCopy(it.Key()), deepCopy(it.Value()))
		}
		return c
	}
	return v // a value: booleans, numbers, strings
}
