package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// A read that carries the writer's consistency token sees that write, on
// every kind of route, immediately after the write returns.
func TestReadYourWrites(t *testing.T) {
	s := newStack(t, stackOptions{})
	w, rd := s.Writer.URL(), s.Reader.URL()
	const pairs = 200
	stale := 0
	sources := map[string]int{}
	read := func(url, token string, want ...string) {
		t.Helper()
		r := do(t, "GET", url, nil, "X-Consistency-Token", token)
		sources[r.Header.Get("X-Read-Source")]++
		if r.Status != 200 || !bodyHas(want...)(r.Body) {
			stale++
			t.Errorf("stale read of %s: %s (want %q)", url, r, want)
		}
	}
	r := do(t, "POST", w+"/v1/factories", `{"name":"RYW"}`)
	expect(t, r, 201, "create factory")
	var f factoryV1
	r.JSON(t, &f)

	var sprocket int64
	for i := 0; i < pairs; i++ {
		switch i % 4 {
		case 0: // create, read it back on both single routes
			r := do(t, "POST", w+"/v1/sprockets", fmt.Sprintf(`{"teeth":%d,"pitch_diameter":2,"outside_diameter":3,"pitch":1}`, i+1))
			expect(t, r, 201, "create")
			var sp sprocketV1
			r.JSON(t, &sp)
			sprocket = num(t, s, sp.ID)
			tok := r.Header.Get("X-Consistency-Token")
			read(fmt.Sprintf("%s/v1/sprockets/%s", rd, sp.ID), tok, fmt.Sprintf(`"teeth":%d`, i+1))
		case 1: // update through the original route, read the collection
			r := do(t, "POST", fmt.Sprintf("%s/api/sprocket/%d/update/%d/2/3/1", w, sprocket, 1000+i), nil)
			expect(t, r, 200, "update")
			read(rd+"/api/sprockets", r.Header.Get("X-Consistency-Token"), fmt.Sprintf(`{"id":%d,"teeth":%d,`, sprocket, 1000+i))
		case 2: // append a sample, read the chart range and the whole history
			ts := 1700000000 + int64(i)*60
			r := do(t, "POST", fmt.Sprintf("%s/v1/factories/%s/samples", w, f.ID), fmt.Sprintf(`{"samples":[{"time":%d,"actual":%d,"goal":1}]}`, ts, i))
			expect(t, r, 200, "append")
			tok := r.Header.Get("X-Consistency-Token")
			read(fmt.Sprintf("%s/v1/factories/%s/chart-data?from=%d&to=%d", rd, f.ID, ts, ts), tok, fmt.Sprintf(`"time":[%d]`, ts))
			read(fmt.Sprintf("%s/api/factory/%d/chart-data", rd, num(t, s, f.ID)), tok, fmt.Sprintf(`%d]}`, ts))
		case 3: // patch, read the original single route
			r := do(t, "PATCH", fmt.Sprintf("%s/v1/sprockets/%s", w, sid(s, sprocket)), fmt.Sprintf(`{"pitch":%d.5}`, i))
			expect(t, r, 200, "patch")
			read(fmt.Sprintf("%s/api/sprocket/%d", rd, sprocket), r.Header.Get("X-Consistency-Token"), fmt.Sprintf(`"pitch":%d.5}`, i))
		}
	}
	if stale != 0 {
		t.Fatalf("%d stale reads", stale)
	}
	t.Logf("%d write-then-read pairs, 0 stale; answers by source: %v", pairs, sources)
	if sources["cache"]+sources["memory"] == 0 {
		t.Errorf("no read was answered from the read model: %v", sources)
	}
	if strings.Contains(fmt.Sprint(sources), "[]") {
		t.Errorf("an answer without X-Read-Source: %v", sources)
	}
}

// A consistency token is good only as the writer sealed it: one made up by
// a client (as unsigned tokens could be, naming any version or WAL
// position), signed in the clear as tokens then were, or changed, is a
// 400, and never makes the reader wait or go to the leader. The writer's
// token shows nothing of what it names.
func TestConsistencyTokensCannotBeForged(t *testing.T) {
	s := newStack(t, stackOptions{})
	w, rd := s.Writer.URL(), s.Reader.URL()
	r := do(t, "POST", w+"/v1/sprockets", `{"teeth":4,"pitch_diameter":2,"outside_diameter":3,"pitch":1}`)
	expect(t, r, 201, "create")
	var sp sprocketV1
	r.JSON(t, &sp)
	good := r.Header.Get("X-Consistency-Token")
	n := num(t, s, sp.ID)
	if sealed, err := base64.RawURLEncoding.DecodeString(good); err != nil || strings.Contains(string(sealed), `"sprocket"`) ||
		strings.Contains(string(sealed), fmt.Sprintf(`"i":%d`, n)) || strings.Contains(string(sealed), `"l":"`) {
		t.Fatalf("the writer's token %q is not sealed (%v)", good, err)
	}
	claims, _ := json.Marshal(map[string]any{"o": 1, "a": "sprocket", "i": n, "v": int64(1) << 60, "l": "FFFFFFFF/FFFFFFFF"})
	forged := base64.RawURLEncoding.EncodeToString(claims)
	mac := hmac.New(sha256.New, []byte("another-key-of-enough-length-0123456789"))
	mac.Write([]byte(forged))
	changed := []byte(good)
	changed[len(changed)/2] = map[bool]byte{true: 'B', false: 'A'}[changed[len(changed)/2] == 'A']
	for name, bad := range map[string]string{
		"unsigned, as tokens first were":    forged,
		"signed in the clear, as then":      forged + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:16]),
		"the writer's, a character changed": string(changed),
		"the writer's, cut short":           good[:len(good)-4],
	} {
		t.Run(name, func(t *testing.T) {
			checkProblem(t, do(t, "GET", fmt.Sprintf("%s/v1/sprockets/%s", rd, sp.ID), nil, "X-Consistency-Token", bad), 400, "X-Consistency-Token")
			checkProblem(t, do(t, "GET", rd+"/v1/sprockets", nil, "X-Consistency-Token", bad), 400, "X-Consistency-Token")
		})
	}
	expect(t, do(t, "GET", fmt.Sprintf("%s/v1/sprockets/%s", rd, sp.ID), nil, "X-Consistency-Token", good), 200, "the writer's own token")
}
