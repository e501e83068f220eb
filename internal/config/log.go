package config

import (
	"io"
	"log/slog"
	"reflect"
	"strings"
)

// Logger returns the program's logger as the Common settings ask.
func (c Common) Logger(w io.Writer, program string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if c.LogFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("program", program)
}

// Attrs returns every setting of cfg (a config struct) by variable name, with
// URLs' passwords and secrets masked, for logging at start.
func Attrs(cfg any) []any {
	var out []any
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f, fv := t.Field(i), v.Field(i)
			if f.Anonymous {
				walk(fv)
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			val := fv.Interface()
			if strings.HasSuffix(name, "_URL") || strings.HasSuffix(name, "_URLS") {
				val = maskURLs(val)
			}
			a := slog.Any(name, val)
			a.Value = a.Value.Resolve() // a Secret hides itself
			out = append(out, a)
		}
	}
	walk(reflect.ValueOf(cfg))
	return out
}

func maskURLs(v any) any {
	switch x := v.(type) {
	case string:
		return redact(x)
	case []string:
		out := make([]string, len(x))
		for i, s := range x {
			out[i] = redact(s)
		}
		return out
	}
	return v
}
