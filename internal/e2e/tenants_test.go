package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// One organization cannot stall the projector for everyone: deleting a
// factory whose history spans from 1970 to the year 9999 (70 million hours,
// two samples) removes its two buckets, and another organization's writes
// stay visible within 2 s throughout.
func TestAWideHistoryDoesNotStallTheProjector(t *testing.T) {
	s := newStack(t, stackOptions{})
	w, rd := s.Writer.URL(), s.Reader.URL()
	writerCmd(t, s, "org", "create", "wide")
	writerCmd(t, s, "org", "create", "bystander")
	a := token(t, s, "wide", "read,write")
	b := token(t, s, "bystander", "read,write")
	r := do(t, "POST", w+"/v1/factories", `{"name":"Wide","samples":[{"time":0,"actual":1,"goal":1},{"time":253402300799,"actual":2,"goal":2}]}`, as(a)...)
	expect(t, r, 201, "create the wide factory")
	var f factoryV1
	r.JSON(t, &f)
	checkFor(t, 10*time.Second, func() string {
		if r := do(t, "GET", fmt.Sprintf("%s/v1/factories/%s", rd, f.ID), nil, as(a)...); !fromReadModel(r.Header.Get("X-Read-Source")) {
			return "the wide factory is not in the read model: " + r.String()
		}
		return ""
	})

	// B's writes, each to be visible within 2 s, while A deletes.
	visible := func(i int) {
		t.Helper()
		r := do(t, "POST", w+"/v1/sprockets", fmt.Sprintf(`{"teeth":%d,"pitch_diameter":1,"outside_diameter":1,"pitch":1}`, i+1), as(b)...)
		expect(t, r, 201, "B creates")
		var sp sprocketV1
		r.JSON(t, &sp)
		deadline := time.Now().Add(2 * time.Second)
		for {
			got := do(t, "GET", fmt.Sprintf("%s/v1/sprockets/%s", rd, sp.ID), nil, as(b)...)
			if got.Status == 200 && fromReadModel(got.Header.Get("X-Read-Source")) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("B's write %d was not in the read model 2 s later", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	visible(0)
	expect(t, do(t, "DELETE", fmt.Sprintf("%s/v1/factories/%s", w, f.ID), nil, as(a)...), 204, "A deletes the wide factory")
	for i := 1; i <= 20; i++ {
		visible(i)
	}

	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.Redis.Port)})
	defer rdb.Close()
	checkFor(t, 10*time.Second, func() string {
		keys, err := rdb.Keys(context.Background(), fmt.Sprintf("rm:*factory:%d:chart:*", num(t, s, f.ID))).Result()
		if err != nil || len(keys) > 0 {
			return fmt.Sprintf("the deleted factory's buckets are still there: %v %v", keys, err)
		}
		return ""
	})
}
