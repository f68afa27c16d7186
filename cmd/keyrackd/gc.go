package main

import (
	"os"
	"runtime/debug"
)

// gcPercent and memoryLimit are keyrackd's garbage-collector settings
// unless GOGC or GOMEMLIMIT are set in its environment (which win, so a
// unit's Environment= line can change them).
//
// Why not Go's default (GOGC=100): a serial allocates about the same
// short-lived garbage every time (request, decoded assertions, the
// answer) over a live heap of a few MiB, so the collector ran several
// times a second under load. With 300, by make bench-compare against the
// same tree without it (5 alternating rounds at concurrency 8): serials/s
// x1.017-1.066 (median 1.023), higher in every round; p99 14.3 -> 12.7
// ms; keyrackd's CPU per serial with the token out of process 1.61 ->
// 1.56 ms; resident memory 36 -> 44 MiB (the goal is under 64).
//
// The limit is a ceiling on the runtime's own memory (not SoftHSM's C
// heap): near it the collector runs as often as it must, so a burst of
// work cannot take the heap past it with GOGC's headroom.
const (
	gcPercent   = 300
	memoryLimit = 48 << 20
)

// tuneGC applies gcPercent and memoryLimit where the environment does not
// say otherwise.
func tuneGC() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(gcPercent)
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok {
		debug.SetMemoryLimit(memoryLimit)
	}
}
