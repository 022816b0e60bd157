// Package deepcopy copies plain data (structs, pointers, slices, maps,
// arrays, interfaces holding such) so that the copy shares nothing with
// the original: what berth hands out of what it keeps (a backend's specs,
// a store's parsed image documents) becomes the caller's own.
package deepcopy

import "reflect"

// Of returns a deep copy of v. Unexported fields are copied as they are
// (a time.Time's wall clock and location; the types berth copies keep no
// references there); channels and functions are shared (plain data has
// none).
func Of[T any](v T) T {
	c := value(reflect.ValueOf(&v).Elem())
	return c.Interface().(T)
}

func value(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		c := reflect.New(v.Type().Elem())
		c.Elem().Set(value(v.Elem()))
		return c
	case reflect.Interface:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		c := reflect.New(v.Type()).Elem()
		c.Set(value(v.Elem()))
		return c
	case reflect.Struct:
		c := reflect.New(v.Type()).Elem()
		c.Set(v) // unexported fields as they are: a time.Time's
		for i := range v.NumField() {
			if f := c.Field(i); f.CanSet() {
				f.Set(value(v.Field(i)))
			}
		}
		return c
	case reflect.Slice:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		if scalar(v.Type().Elem().Kind()) {
			reflect.Copy(c, v) // a seccomp profile's hundreds of names at once
			return c
		}
		for i := range v.Len() {
			c.Index(i).Set(value(v.Index(i)))
		}
		return c
	case reflect.Array:
		c := reflect.New(v.Type()).Elem()
		if scalar(v.Type().Elem().Kind()) {
			c.Set(v)
			return c
		}
		for i := range v.Len() {
			c.Index(i).Set(value(v.Index(i)))
		}
		return c
	case reflect.Map:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		c := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			c.SetMapIndex(value(it.Key()), value(it.Value()))
		}
		return c
	}
	return v // a value: booleans, numbers, strings
}

// scalar kinds hold no references: copying the value copies all.
func scalar(k reflect.Kind) bool {
	switch k {
	case reflect.Bool, reflect.String,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	}
	return false
}
