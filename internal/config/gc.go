package config

import "runtime/debug"

// DefaultGOGC is the garbage collector's target when GOGC is not set. The
// programs keep live heaps of a few megabytes and allocate per request, so
// at Go's default of 100 they collect many times a second under load; 400
// trades tens of megabytes for about a quarter of the collections.
const DefaultGOGC = 400

// TuneGC sets the collector's target to DefaultGOGC unless the GOGC
// variable says otherwise (Go reads that itself).
func TuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGOGC)
	}
}
