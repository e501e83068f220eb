//go:build bench

package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// cpuTimes maps a process group to the CPU time its processes have used: the
// programs by name, Postgres by the role in its process title (a backend,
// the WAL writer, the replica's startup process...), kernel workers as one,
// so that a phase's figures say where the machine's two cores went.
type cpuTimes map[string]time.Duration

// processTimes is the CPU time each process has used, by pid.
type processTimes map[int]process

type process struct {
	group string // as in cpuTimes
	used  time.Duration
}

// ticksPerSecond is USER_HZ, 100 on every Linux this runs on.
const ticksPerSecond = 100

// since returns what each group used from before to now. A process is
// counted by pid, so that one that changes its name (a kernel worker takes
// the name of its work) is not counted whole again.
func (before processTimes) since() cpuTimes {
	t := cpuTimes{}
	for pid, p := range readProcessTimes() {
		t[p.group] += p.used - before[pid].used
	}
	return t
}

func readProcessTimes() processTimes {
	t := processTimes{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue // the process ended
		}
		// The command name is in parentheses and may hold spaces; the
		// fields after it are space-separated, utime and stime being the
		// 12th and 13th.
		end := bytes.LastIndexByte(stat, ')')
		start := bytes.IndexByte(stat, '(')
		if start < 0 || end < start {
			continue
		}
		fields := strings.Fields(string(stat[end+1:]))
		if len(fields) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		pid, _ := strconv.Atoi(filepath.Base(dir))
		name := string(stat[start+1 : end])
		switch {
		case name == "postgres":
			name = postgresRole(dir)
		case strings.HasPrefix(name, "kworker/"):
			name = "kernel workers"
		}
		t[pid] = process{name, time.Duration(utime+stime) * time.Second / ticksPerSecond}
	}
	return t
}

// postgresRole names a Postgres process by its title: "postgres: walwriter"
// gives "pg walwriter"; a backend's title starts with its user name, so any
// title that is not an auxiliary process's is "pg backend".
func postgresRole(dir string) string {
	cmd, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return "pg"
	}
	title := strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
	rest, ok := strings.CutPrefix(title, "postgres: ")
	if !ok {
		return "pg postmaster"
	}
	word, _, _ := strings.Cut(rest, " ")
	switch word {
	case "checkpointer", "background", "walwriter", "autovacuum", "logical", "walsender",
		"walreceiver", "startup", "archiver", "stats":
		return "pg " + word
	}
	return "pg backend"
}

// cpuReport returns what each group used, as a share of one core over
// elapsed and as CPU time per request; groups under 1% of a core are left
// out.
func cpuReport(used cpuTimes, elapsed time.Duration, requests float64) string {
	type row struct {
		name string
		used time.Duration
	}
	var rows []row
	var total time.Duration
	for name, t := range used {
		if t <= 0 {
			continue
		}
		if name != loadGenerator {
			total += t
		}
		if float64(t) >= 0.01*float64(elapsed) {
			rows = append(rows, row{name, t})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].used > rows[j].used })
	var b strings.Builder
	line := func(name string, used time.Duration) {
		fmt.Fprintf(&b, "    %-22s %5.0f%% of a core", name, 100*float64(used)/float64(elapsed))
		fmt.Fprintf(&b, "   %6.1f µs/request\n", float64(used.Microseconds())/requests)
	}
	for _, r := range rows {
		line(r.name, r.used)
	}
	line("all but wrk", total)
	return b.String()
}

// loadGenerator is wrk's process name: its CPU is shown, not counted as the
// servers'.
const loadGenerator = "wrk"
