package config

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultGOGC is the garbage collector's target when GOGC is not set. The
// programs keep live heaps of a few megabytes and allocate per request, so
// at Go's default of 100 they collect many times a second under load; 400
// trades tens of megabytes for about a quarter of the collections.
const DefaultGOGC = 400

// memoryLimitShare is the part of the container's memory limit the Go heap
// may grow to before the collector works harder: the rest is for the
// runtime, stacks and what is not Go's.
const memoryLimitShare = 0.9

// cgroupLimits are where Linux says how much memory the process's
// container may use: cgroup v2, then v1.
var cgroupLimits = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// TuneGC sets the collector's target to DefaultGOGC unless the GOGC
// variable says otherwise, and, unless GOMEMLIMIT does, a soft memory limit
// of 90% of the container's: with GOGC at 400 and no limit, the heap may
// grow to five times what is live, and a container would be killed for it
// rather than collect sooner. (Go reads both variables itself.) It returns
// the limit it set, 0 for none.
func TuneGC(getenv func(string) string) int64 {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGOGC)
	}
	if getenv("GOMEMLIMIT") != "" {
		return 0
	}
	limit := containerMemory(cgroupLimits)
	if limit <= 0 {
		return 0
	}
	soft := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(soft)
	return soft
}

// containerMemory returns the first memory limit found in files, 0 when
// there is none (no file, "max", or a number so large it means none).
func containerMemory(files []string) int64 {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 {
			return 0 // "max", or the kernel's way of saying no limit
		}
		return n
	}
	return 0
}
