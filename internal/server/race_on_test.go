//go:build race

package server_test

// raceEnabled: the race detector slows every goroutine several times and
// caps them at 8128, so load tests scale down under it.
const raceEnabled = true
