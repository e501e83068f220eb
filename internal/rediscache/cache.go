// Package rediscache stores the read model in Redis: one hash per endpoint
// key holding the body, its ETag, version and owner. Every write is
// version-guarded in a Lua script, so two projectors or a late redelivery
// can never roll a key back.
package rediscache

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// Hash fields of an entry.
const (
	fBody    = "b"
	fETag    = "e"
	fVersion = "v"
	fOrg     = "o"
	fDeleted = "d"
	fFirst   = "t0"
	fLast    = "t1"
	fMembers = "m"
)

// Keys of the cache's own bookkeeping.
const (
	dirtyKey = readmodel.Prefix + "dirty"
	// builtKey says a full rebuild completed. The 5 is the read model's
	// shape (2: a factory's buckets are listed in an index; 4: the bodies
	// of the original routes are kept in segments; 5: factories' charts
	// have aggregates): a read model of an older shape is rebuilt once.
	builtKey = readmodel.Prefix + "built:5"
)

//go:embed guard.lua
var guardSrc string

//go:embed clear.lua
var clearSrc string

//go:embed prune.lua
var pruneSrc string

// oldShapes match the keys of read models of earlier shapes, which a
// rebuild to this shape deletes: the whole bodies of the original routes.
var oldShapes = []string{
	readmodel.Prefix + "factory:*:compat", readmodel.Prefix + "factory:*:compat-chart",
	readmodel.Prefix + "org:*:compat:factories", readmodel.Prefix + "org:*:compat:sprockets",
}

// Cache is the read model in Redis.
type Cache struct {
	rdb   redis.UniversalClient
	guard *redis.Script
	clear *redis.Script
	prune *redis.Script
	grant *redis.Script
	live  *redis.Script
	// stageOver is the size of an entry's fields past which a guarded
	// write stages them in a hash of their own (see guard.lua).
	stageOver int
}

// stageOver is Cache.stageOver unless a test says otherwise. A 4 MB body
// passed to the guard script costs Redis about 12 ms; staged (a plain HSET,
// then RENAME in the script) about 2.
const stageOver = 64 << 10

// stagedTTL bounds how long a staged hash outlives a write that never ran
// its script (the projector stopped in between).
const stagedTTL = time.Minute

// New returns a Cache over rdb.
func New(rdb redis.UniversalClient) *Cache {
	return &Cache{
		rdb: rdb, guard: redis.NewScript(guardSrc), clear: redis.NewScript(clearSrc), prune: redis.NewScript(pruneSrc),
		grant: redis.NewScript(grantSrc), live: redis.NewScript(liveSrc),
		stageOver: stageOver,
	}
}

// Connect parses url, dials Redis with short timeouts (a slow Redis must
// turn into a database read, not a slow answer) and returns the client.
func Connect(url string, poolSize int, timeout time.Duration) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	opts.PoolSize = poolSize
	opts.MinIdleConns = min(poolSize, 8)
	opts.DialTimeout = timeout
	opts.ReadTimeout = timeout
	opts.WriteTimeout = timeout
	opts.PoolTimeout = timeout
	opts.MaxRetries = 1
	return redis.NewClient(opts), nil
}

// Ping reports whether Redis answers.
func (c *Cache) Ping(ctx context.Context) error { return c.rdb.Ping(ctx).Err() }

// Apply performs writes, each atomically, all in one round trip. It
// returns, per write, one result per record: readmodel.Written, Dropped,
// Refused or Fenced.
func (c *Cache) Apply(ctx context.Context, writes ...readmodel.Write) ([][]int, error) {
	if len(writes) == 0 {
		return nil, nil
	}
	type call struct {
		keys   []string
		args   []any
		staged []stagedHash
	}
	calls := make([]call, len(writes))
	for i, w := range writes {
		calls[i].keys, calls[i].args, calls[i].staged = c.guardArgs(w)
	}
	run := func(stage bool) ([]*redis.Cmd, error) {
		pipe := c.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(calls))
		for i, cl := range calls {
			if stage {
				for _, h := range cl.staged {
					pipe.HSet(ctx, h.key, h.fields...)
					pipe.Expire(ctx, h.key, stagedTTL)
				}
			}
			cmds[i] = c.guard.EvalSha(ctx, pipe, cl.keys, cl.args...)
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, err := run(true)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted or its script cache was flushed: load and retry
		// (what was staged is still there). The writes are guarded, so
		// running one twice changes nothing.
		if err = c.guard.Load(ctx, c.rdb).Err(); err == nil {
			cmds, err = run(false)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("guarded write: %w", err)
	}
	out := make([][]int, len(cmds))
	for i, cmd := range cmds {
		res, err := cmd.Int64Slice()
		if err != nil {
			return nil, fmt.Errorf("guarded write: %w", err)
		}
		out[i] = make([]int, len(res))
		for j, r := range res {
			out[i][j] = int(r)
		}
	}
	return out, nil
}

// stagedHash is the fields of a large entry, sent ahead of the script.
type stagedHash struct {
	key    string
	fields []any
}

// guardArgs returns the keys and arguments of the guard script for w, and
// the hashes to stage before it runs.
func (c *Cache) guardArgs(w readmodel.Write) ([]string, []any, []stagedHash) {
	keys := make([]string, 0, len(w.Records)+2)
	var staged []stagedHash
	fence, index := "0", "0"
	if w.Org > 0 {
		fence = "1"
	}
	if w.Index != "" {
		index = "1"
	}
	args := []any{string(w.Rule), len(w.Records), fence, index}
	for i, r := range w.Records {
		keys = append(keys, r.Key)
		var exp int64
		if w.Rule == readmodel.Exact || w.Rule == readmodel.AllExact {
			exp = w.Expected[i]
		}
		fields := encode(r.Entry)
		if size(r.Entry) > c.stageOver {
			staged = append(staged, stagedHash{key: stagingKey(), fields: fields})
			args = append(args, r.Entry.Version, exp, -1)
			continue
		}
		args = append(args, r.Entry.Version, exp, len(fields)/2)
		args = append(args, fields...)
	}
	if w.Org > 0 {
		keys = append(keys, FenceKey(w.Org))
	}
	if w.Index != "" {
		keys = append(keys, w.Index)
	}
	if len(w.Dirty) > 0 {
		keys = append(keys, dirtyKey)
		for _, d := range w.Dirty {
			args = append(args, d)
		}
	}
	for _, h := range staged {
		keys = append(keys, h.key)
	}
	return keys, args, staged
}

// size is about how many bytes e's fields take.
func size(e readmodel.Entry) int { return len(e.Body) + len(e.Members) + len(e.ETag) }

// stagingKey returns a new key to stage an entry under; it is bookkeeping,
// not an endpoint's (Keys leaves it out).
func stagingKey() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return readmodel.Prefix + "meta:staging:" + hex.EncodeToString(b[:])
}

func encode(e readmodel.Entry) []any {
	f := []any{fVersion, e.Version, fOrg, e.Org}
	if e.Deleted {
		return append(f, fDeleted, "1")
	}
	f = append(f, fBody, e.Body, fETag, e.ETag)
	if e.First != nil {
		f = append(f, fFirst, *e.First)
	}
	if e.Last != nil {
		f = append(f, fLast, *e.Last)
	}
	if e.Members != nil {
		f = append(f, fMembers, []byte(e.Members))
	}
	return f
}

// Get returns the entry at key; its Members only when withMembers is set
// (a collection's member list can be large and is rarely needed). ok is
// false when the key does not exist.
func (c *Cache) Get(ctx context.Context, key string, withMembers bool) (e readmodel.Entry, ok bool, err error) {
	fields := entryFields
	if withMembers {
		fields = append(fields[:len(fields):len(fields)], fMembers)
	}
	vals, err := c.rdb.HMGet(ctx, key, fields...).Result()
	if err != nil {
		return e, false, fmt.Errorf("get %s: %w", key, err)
	}
	return decode(vals)
}

var entryFields = []string{fVersion, fOrg, fDeleted, fBody, fETag, fFirst, fLast}

// Members returns the ETag and the member list of the collection at key,
// without its body; ok is false when the key does not exist.
func (c *Cache) Members(ctx context.Context, key string) (etag string, m readmodel.Members, ok bool, err error) {
	vals, err := c.rdb.HMGet(ctx, key, fETag, fMembers).Result()
	if err != nil {
		return "", nil, false, fmt.Errorf("get the members of %s: %w", key, err)
	}
	etag, ok = vals[0].(string)
	if s, isString := vals[1].(string); isString {
		m = readmodel.Members(s)
	}
	return etag, m, ok, nil
}

// GetMany returns the entries at keys in one round trip; ok[i] says whether
// keys[i] exists.
func (c *Cache) GetMany(ctx context.Context, keys []string) ([]readmodel.Entry, []bool, error) {
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.HMGet(ctx, k, entryFields...)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("get %d keys: %w", len(keys), err)
	}
	entries := make([]readmodel.Entry, len(keys))
	oks := make([]bool, len(keys))
	for i, cmd := range cmds {
		e, ok, err := decode(cmd.Val())
		if err != nil {
			return nil, nil, fmt.Errorf("get %s: %w", keys[i], err)
		}
		entries[i], oks[i] = e, ok
	}
	return entries, oks, nil
}

func decode(vals []any) (readmodel.Entry, bool, error) {
	var e readmodel.Entry
	if vals[0] == nil {
		return e, false, nil
	}
	var err error
	num := func(v any) int64 {
		s, _ := v.(string)
		n, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("corrupt read-model entry: %q is not a number", s)
		}
		return n
	}
	e.Version = num(vals[0])
	e.Org = num(vals[1])
	e.Deleted = vals[2] != nil
	if s, ok := vals[3].(string); ok {
		e.Body = []byte(s)
	}
	e.ETag, _ = vals[4].(string)
	if vals[5] != nil {
		t := num(vals[5])
		e.First = &t
	}
	if vals[6] != nil {
		t := num(vals[6])
		e.Last = &t
	}
	if len(vals) > 7 {
		if s, ok := vals[7].(string); ok {
			e.Members = readmodel.Members(s)
		}
	}
	return e, true, err
}

// Indexed returns the keys the index set holds (see readmodel.Write.Index).
func (c *Cache) Indexed(ctx context.Context, index string) ([]string, error) {
	keys, err := c.rdb.SMembers(ctx, index).Result()
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", index, err)
	}
	return keys, nil
}

// Delete removes keys, and publishes their deletion on the feed in the same
// transaction.
func (c *Cache) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	deleted := make(map[string]int64, len(keys))
	for _, k := range keys {
		deleted[k] = -1
	}
	pipe := c.rdb.TxPipeline()
	pipe.Del(ctx, keys...)
	publishChanges(ctx, pipe, deleted)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("delete %s: %w", keys[0], err)
	}
	return nil
}

// Dirty returns the pending marks: each body's mark, and each member mark
// (readmodel.MemberMark), to its counter.
func (c *Cache) Dirty(ctx context.Context) (map[string]string, error) {
	m, err := c.rdb.HGetAll(ctx, dirtyKey).Result()
	if err != nil {
		return nil, fmt.Errorf("read dirty marks: %w", err)
	}
	return m, nil
}

// Clear removes the given marks, each only if it still holds the counter
// given, that is if nobody marked it again since it was read. Each mark is
// checked on its own, so a long list goes in several steps and never holds
// Redis up for long.
func (c *Cache) Clear(ctx context.Context, marks map[string]string) error {
	args := make([]any, 0, 2*min(len(marks), 1000))
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		err := c.clear.Run(ctx, c.rdb, []string{dirtyKey}, args...).Err()
		args = args[:0]
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("clear dirty marks: %w", err)
		}
		return nil
	}
	for field, mark := range marks {
		if args = append(args, field, mark); len(args) == cap(args) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// PruneSegments deletes those of keys, segments listed in the index, that
// the manifest does not list when they are deleted (a segment a newer
// manifest lists stays, whoever asked); keys that are not segment keys
// are left alone.
func (c *Cache) PruneSegments(ctx context.Context, manifest, index string, keys []string) error {
	for len(keys) > 0 {
		batch := []string{manifest, index}
		var names []any
		for len(keys) > 0 && len(names) < 1000 {
			if i := strings.LastIndex(keys[0], segmentInfix); i >= 0 {
				batch, names = append(batch, keys[0]), append(names, keys[0][i+len(segmentInfix):])
			}
			keys = keys[1:]
		}
		if len(names) == 0 {
			continue
		}
		if err := c.prune.Run(ctx, c.rdb, batch, names...).Err(); err != nil {
			return fmt.Errorf("prune the segments of %s: %w", manifest, err)
		}
	}
	return nil
}

// segmentInfix comes before a segment's name in its key.
const segmentInfix = ":seg:"

// DropOldShapes deletes the keys of read models of earlier shapes, before
// a rebuild to this one.
func (c *Cache) DropOldShapes(ctx context.Context) error {
	for _, pattern := range oldShapes {
		iter := c.rdb.Scan(ctx, 0, pattern, 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("find keys of an older shape: %w", err)
		}
		for start := 0; start < len(keys); start += 1000 {
			if err := c.Delete(ctx, keys[start:min(start+1000, len(keys))]...); err != nil {
				return err
			}
		}
	}
	return nil
}

// Built reports whether a full rebuild has completed since Redis last lost
// its data.
func (c *Cache) Built(ctx context.Context) (bool, error) {
	n, err := c.rdb.Exists(ctx, builtKey).Result()
	if err != nil {
		return false, fmt.Errorf("check built marker: %w", err)
	}
	return n == 1, nil
}

// MarkBuilt records that a full rebuild completed.
func (c *Cache) MarkBuilt(ctx context.Context) error {
	if err := c.rdb.Set(ctx, builtKey, time.Now().UTC().Format(time.RFC3339), 0).Err(); err != nil {
		return fmt.Errorf("set built marker: %w", err)
	}
	return nil
}

// Keys returns every read-model key (not the bookkeeping ones), for
// verification.
func (c *Cache) Keys(ctx context.Context) ([]string, error) {
	var out []string
	iter := c.rdb.Scan(ctx, 0, readmodel.Prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if k != dirtyKey && !strings.HasPrefix(k, readmodel.Prefix+"built") && !strings.HasPrefix(k, readmodel.Prefix+"meta:") {
			out = append(out, k)
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("scan keys: %w", err)
	}
	return out, nil
}
