package rediscache

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/readmodel"
)

//go:embed live.lua
var liveSrc string

// LogLive appends changes to their organizations' live logs, each change
// at most once (see live.lua), in one round trip. Entries older than
// retention, and past maxEntries per organization, are trimmed.
func (c *Cache) LogLive(ctx context.Context, retention time.Duration, maxEntries int, changes map[int64][]readmodel.Change) error {
	if len(changes) == 0 {
		return nil
	}
	run := func() error {
		pipe := c.rdb.Pipeline()
		for org, cs := range changes {
			args := make([]any, 0, 2+6*len(cs))
			args = append(args, retention.Milliseconds(), maxEntries)
			for _, ch := range cs {
				args = append(args, ch.Aggregate(), ch.Version, ch.Type, ch.Kind, ch.ID, ch.Data)
			}
			c.live.EvalSha(ctx, pipe, []string{readmodel.LiveKey(org), readmodel.LiveSeenKey(org), readmodel.LiveTrimmedKey(org), FenceKey(org)}, args...)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted or its script cache was flushed: logging twice
		// adds nothing (see live.lua).
		if err = c.live.Load(ctx, c.rdb).Err(); err == nil {
			err = run()
		}
	}
	if err != nil {
		return fmt.Errorf("log live changes: %w", err)
	}
	return nil
}

// ReadLive returns org's live log past the entry after (exclusive), at
// most count entries, and the log's state, in one round trip.
func (c *Cache) ReadLive(ctx context.Context, org int64, after string, count int64) (readmodel.LiveLog, error) {
	key := readmodel.LiveKey(org)
	pipe := c.rdb.Pipeline()
	info := pipe.XInfoStream(ctx, key)
	trimmed := pipe.Get(ctx, readmodel.LiveTrimmedKey(org))
	self := pipe.XRangeN(ctx, key, after, after, 1)
	rng := pipe.XRangeN(ctx, key, "("+after, "+", count)
	_, _ = pipe.Exec(ctx)
	st, err := info.Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return readmodel.LiveLog{}, nil
		}
		return readmodel.LiveLog{}, fmt.Errorf("read live log of organization %d: %w", org, err)
	}
	msgs, err := rng.Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return readmodel.LiveLog{}, fmt.Errorf("read live log of organization %d: %w", org, err)
	}
	gone, err := trimmed.Result()
	if errors.Is(err, redis.Nil) {
		gone, err = "0-0", nil
	}
	if err != nil {
		return readmodel.LiveLog{}, fmt.Errorf("read live log of organization %d: %w", org, err)
	}
	held, err := self.Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return readmodel.LiveLog{}, fmt.Errorf("read live log of organization %d: %w", org, err)
	}
	out := readmodel.LiveLog{Exists: true, Last: st.LastGeneratedID, Trimmed: gone, HoldsAfter: len(held) > 0,
		Entries: make([]readmodel.LiveEntry, 0, len(msgs))}
	for _, m := range msgs {
		e, ok := liveEntry(m)
		if !ok {
			continue // not written by live.lua: nothing to send
		}
		out.Entries = append(out.Entries, e)
	}
	return out, nil
}

func liveEntry(m redis.XMessage) (readmodel.LiveEntry, bool) {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	id, err1 := strconv.ParseInt(str("i"), 10, 64)
	version, err2 := strconv.ParseInt(str("v"), 10, 64)
	e := readmodel.LiveEntry{ID: m.ID, Change: readmodel.Change{
		Kind: str("k"), ID: id, Version: version, Type: str("t"), Data: []byte(str("d")),
	}}
	return e, err1 == nil && err2 == nil && e.Type != "" && len(e.Data) > 0
}
