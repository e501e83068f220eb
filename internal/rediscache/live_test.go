package rediscache

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sprockets-api/sprockets/internal/readmodel"
)

func change(id, version int64, typ string) readmodel.Change {
	return readmodel.Change{Kind: readmodel.LiveSprocket, ID: id, Version: version, Type: typ, Data: []byte(`{"v":` + itoa(version) + `}`)}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// A change is logged once, however often it is told; the changes of one
// version told together are all logged; a deleted organization logs
// nothing; and a read past a position says what the log lost.
func TestLiveLog(t *testing.T) {
	c, rdb := newCache(t)
	ctx := context.Background()
	log := func(org int64, cs ...readmodel.Change) {
		t.Helper()
		if err := c.LogLive(ctx, time.Minute, 1000, map[int64][]readmodel.Change{org: cs}); err != nil {
			t.Fatal(err)
		}
	}
	read := func(org int64, after string) readmodel.LiveLog {
		t.Helper()
		lg, err := c.ReadLive(ctx, org, after, 100)
		if err != nil {
			t.Fatal(err)
		}
		return lg
	}
	if lg := read(1, "0-0"); lg.Exists || len(lg.Entries) != 0 {
		t.Fatalf("no log yet: %+v", lg)
	}
	log(1, change(7, 1, readmodel.SprocketCreated))
	log(1, change(7, 1, readmodel.SprocketCreated), change(7, 2, readmodel.SprocketUpdated)) // 1 again: a redelivery
	log(1, change(7, 2, readmodel.SprocketUpdated))
	f := readmodel.Change{Kind: readmodel.LiveFactory, ID: 3, Version: 1, Type: readmodel.FactoryCreated, Data: []byte(`{}`)}
	g := f
	g.Type = readmodel.FactorySamples
	log(1, f, g)
	log(1, f, g)
	lg := read(1, "0-0")
	var got []string
	for _, e := range lg.Entries {
		got = append(got, e.Type+"@"+itoa(e.Version)+":"+string(e.Data))
	}
	want := []string{"sprocket.created@1:{\"v\":1}", "sprocket.updated@2:{\"v\":2}", "factory.created@1:{}", "factory.samples@1:{}"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("logged %q, want %q", got, want)
	}
	if !lg.Exists || lg.Last != lg.Entries[3].ID || lg.Trimmed != "0-0" {
		t.Fatalf("state: %+v", lg)
	}
	if rest := read(1, lg.Entries[1].ID); len(rest.Entries) != 2 || rest.Entries[0].ID != lg.Entries[2].ID {
		t.Fatalf("after the second entry: %+v", rest.Entries)
	}
	if other := read(2, "0-0"); other.Exists {
		t.Fatal("organization 2 has organization 1's log")
	}

	// Past the cap, and past the retention, entries are trimmed, and the
	// newest trimmed is known.
	trims := func(retention time.Duration, most int, v int64) readmodel.LiveLog {
		t.Helper()
		before := read(1, "0-0")
		if err := c.LogLive(ctx, retention, most, map[int64][]readmodel.Change{1: {change(7, v, readmodel.SprocketUpdated)}}); err != nil {
			t.Fatal(err)
		}
		after := read(1, "0-0")
		gone := len(before.Entries) + 1 - len(after.Entries)
		if gone < 1 || after.Trimmed != before.Entries[gone-1].ID {
			t.Fatalf("%d trimmed, newest trimmed %s; before: %+v", gone, after.Trimmed, before.Entries)
		}
		return after
	}
	if lg := trims(time.Minute, 3, 3); len(lg.Entries) != 3 {
		t.Fatalf("%d entries kept, want 3", len(lg.Entries))
	}
	time.Sleep(5 * time.Millisecond)
	if lg := trims(time.Millisecond, 3, 4); len(lg.Entries) != 1 {
		t.Fatalf("%d entries kept, want the new one", len(lg.Entries))
	}

	// A fenced organization logs nothing.
	if err := c.Fence(ctx, 4); err != nil {
		t.Fatal(err)
	}
	log(4, change(9, 1, readmodel.SprocketCreated))
	if n, _ := rdb.Exists(ctx, readmodel.LiveKey(4)).Result(); n != 0 {
		t.Fatal("a deleted organization's change was logged")
	}
}

// Appending to a log none of whose entries has aged costs the same
// however long the log: the search for the newest aged entry, which reads
// a log backwards from its newest entry when none is older than its bound
// (4 ms an event at 10,000 entries), is not made.
func TestLiveLogAppendsWithoutReadingTheLog(t *testing.T) {
	c, rdb := newCache(t)
	ctx := context.Background()
	for v := int64(1); v <= 2000; v += 100 {
		var cs []readmodel.Change
		for i := v; i < v+100; i++ {
			cs = append(cs, change(i, 1, readmodel.SprocketCreated))
		}
		if err := c.LogLive(ctx, time.Minute, 10_000, map[int64][]readmodel.Change{1: cs}); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.LogLive(ctx, time.Minute, 10_000, map[int64][]readmodel.Change{1: {change(7, 2, readmodel.SprocketUpdated)}}); err != nil {
		t.Fatal(err)
	}
	stats, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stats, "cmdstat_xrevrange:") {
		t.Errorf("an append to a log with nothing aged searched it backwards:\n%s", stats)
	}
	if n, _ := rdb.XLen(ctx, readmodel.LiveKey(1)).Result(); n != 2001 {
		t.Errorf("the log holds %d entries, want 2,001", n)
	}
}
