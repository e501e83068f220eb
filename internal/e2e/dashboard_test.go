package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// screenshots is where the dashboard test leaves its screenshots, for a
// person to look at.
func screenshots(t *testing.T) string {
	dir := os.Getenv("SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(repoRoot, ".artifacts", "dashboard")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser starts headless Chromium (Debian's: make deps installs it) and
// returns a context that drives one tab of it.
func browser(t *testing.T) context.Context {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("Chromium is required (make deps installs it): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// The dashboard in a real browser, through the edge as make run serves it:
// it shows the seed factories with the seed's values and the sprockets; a
// sample appended through the writer appears in its chart, and a sprocket
// created in the table, without a reload; a revoked token returns the page
// to its sign-in state.
func TestDashboardInBrowser(t *testing.T) {
	s := newStack(t, stackOptions{edge: true})
	edge, w := s.Edge.URL(), s.Writer.URL()
	tok := token(t, s, "default", "read", "--name", "dashboard")
	ctx := browser(t)
	dir := screenshots(t)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100) /* 100: PNG */)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// waitFor polls the page until js is true.
	waitFor := func(what, js string, timeout time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			if evaluate[bool](t, ctx, js) {
				return time.Since(start)
			}
			if time.Since(start) > timeout {
				shot("failed.png")
				t.Fatalf("%s: not within %s; the page is %s (screenshot in %s)", what, timeout,
					evaluate[string](t, ctx, `document.body.dataset.state + ": " + document.querySelector("#status").textContent + document.querySelector("#signin-error").textContent`), dir)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(edge+"/"), chromedp.WaitVisible(chromedp.ID("token"))); err != nil {
		t.Fatal(err)
	}
	shot("1-sign-in.png")
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("token"), tok), chromedp.Click(chromedp.CSS("#signin-form button"))); err != nil {
		t.Fatal(err)
	}

	// The seed factories, each with its last sample as the API has it.
	var list struct {
		Items []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"items"`
	}
	do(t, "GET", edge+"/v1/factories?limit=100", nil, as(tok)...).JSON(t, &list)
	if len(list.Items) == 0 {
		t.Fatal("no seed factories")
	}
	waitFor("the page is live", `document.body.dataset.state === "live"`, 10*time.Second)
	waitFor("every factory is drawn", fmt.Sprintf(`document.querySelectorAll(".factory[data-last-time]").length === %d`, len(list.Items)), 10*time.Second)
	for _, f := range list.Items {
		var chart struct {
			ChartData struct {
				Actual []int64 `json:"sprocket_production_actual"`
				Goal   []int64 `json:"sprocket_production_goal"`
				Time   []int64 `json:"time"`
			} `json:"chart_data"`
		}
		do(t, "GET", edge+"/v1/factories/"+f.ID+"/chart-data", nil, as(tok)...).JSON(t, &chart)
		c := chart.ChartData
		n := len(c.Time)
		got := evaluate[map[string]string](t, ctx, fmt.Sprintf(`Object.assign({name: document.querySelector('[data-factory=%q] h3').textContent}, document.querySelector('[data-factory=%q]').dataset)`, f.ID, f.ID))
		want := map[string]string{"name": f.Name, "factory": f.ID, "points": strconv.Itoa(n),
			"lastTime": fmt.Sprint(c.Time[n-1]), "lastActual": fmt.Sprint(c.Actual[n-1]), "lastGoal": fmt.Sprint(c.Goal[n-1])}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("factory %s shows %v, want %v", f.ID, got, want)
		}
	}
	var sprockets struct {
		Items []struct{ ID string } `json:"items"`
	}
	do(t, "GET", edge+"/v1/sprockets?limit=100", nil, as(tok)...).JSON(t, &sprockets)
	waitFor("every sprocket is listed", fmt.Sprintf(`document.querySelectorAll("tr[data-sprocket]").length === %d`, len(sprockets.Items)), 5*time.Second)
	shot("2-live.png")

	// A sample appended through the writer reaches the chart.
	f := list.Items[0].ID
	last := evaluate[string](t, ctx, fmt.Sprintf(`document.querySelector('[data-factory=%q]').dataset.lastTime`, f))
	next, _ := strconv.ParseInt(last, 10, 64)
	next += 3600
	writer := token(t, s, "default", "write")
	appended := time.Now()
	expect(t, do(t, "POST", w+"/v1/factories/"+f+"/samples", fmt.Sprintf(`{"samples":[{"time":%d,"actual":27,"goal":35}]}`, next), as(writer)...), 200, "append")
	waitFor("the appended sample is drawn", fmt.Sprintf(`(d => d.lastTime === "%d" && d.lastActual === "27" && d.lastGoal === "35")(document.querySelector('[data-factory=%q]').dataset)`, next, f), 5*time.Second)
	t.Logf("an appended sample was drawn %s after the write was sent", time.Since(appended).Round(time.Millisecond))

	// A sprocket created through the writer reaches the table.
	created := time.Now()
	r := do(t, "POST", w+"/v1/sprockets", `{"teeth":77,"pitch_diameter":5,"outside_diameter":6,"pitch":1}`, as(writer)...)
	expect(t, r, 201, "create")
	var sp sprocketV1
	r.JSON(t, &sp)
	waitFor("the new sprocket is listed", fmt.Sprintf(`(r => r !== null && r.children[1].textContent === "77")(document.querySelector('tr[data-sprocket=%q]'))`, sp.ID), 5*time.Second)
	t.Logf("a created sprocket was listed %s after the write was sent", time.Since(created).Round(time.Millisecond))
	shot("3-updated.png")

	// Revoking the token returns the page to its sign-in state, saying why.
	writerCmd(t, s, "token", "revoke", tokenID(t, s, "default", "dashboard"))
	waitFor("the page signs out", `document.body.dataset.state === "signin" && document.querySelector("#signin-error").textContent !== ""`, 5*time.Second)
	if stored := evaluate[string](t, ctx, `String(sessionStorage.getItem("sprockets-token"))`); stored != "null" {
		t.Fatalf("the revoked token is still stored: %q", stored)
	}
	shot("4-revoked.png")
	t.Logf("screenshots in %s", dir)
}

// evaluate runs js in the page and returns its value.
func evaluate[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}
