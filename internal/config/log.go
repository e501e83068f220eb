package config

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"
)

// Logger returns the program's logger as the Common settings ask, and the
// buffer its lines go through: Flush it before the program exits.
func (c Common) Logger(w io.Writer, program string) (*slog.Logger, *LogBuffer) {
	buf := &LogBuffer{w: bufio.NewWriterSize(w, 64<<10)}
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	var h slog.Handler = slog.NewJSONHandler(buf, opts)
	if c.LogFormat == "text" {
		h = slog.NewTextHandler(buf, opts)
	}
	return slog.New(flushing{h, buf}).With("program", program), buf
}

// LogBuffer batches log lines: an access log line per request would
// otherwise be a write to the output per request, which cost readers a
// tenth of their time. Lines go out within flushAfter, and at once from a
// warning up.
type LogBuffer struct {
	mu        sync.Mutex
	w         *bufio.Writer
	scheduled bool
}

// flushAfter bounds how long a line waits in the buffer.
const flushAfter = 100 * time.Millisecond

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.scheduled {
		b.scheduled = true
		time.AfterFunc(flushAfter, func() { _ = b.Flush() })
	}
	return b.w.Write(p)
}

// Flush writes out what the buffer holds.
func (b *LogBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.scheduled = false
	return b.w.Flush()
}

// flushing flushes its buffer after every line from a warning up.
type flushing struct {
	slog.Handler
	buf *LogBuffer
}

func (f flushing) Handle(ctx context.Context, r slog.Record) error {
	err := f.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		_ = f.buf.Flush()
	}
	return err
}

func (f flushing) WithAttrs(attrs []slog.Attr) slog.Handler {
	return flushing{f.Handler.WithAttrs(attrs), f.buf}
}

func (f flushing) WithGroup(name string) slog.Handler {
	return flushing{f.Handler.WithGroup(name), f.buf}
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
