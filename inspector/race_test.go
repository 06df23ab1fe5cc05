//go:build race

package inspector

// raceEnabled scales down the slowest tests: the race detector makes CRS
// about ten times slower.
const raceEnabled = true
