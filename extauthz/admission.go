package extauthz

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits bound the inspections a Server runs at once. A check over a bound
// waits at most QueueWait (and never past its deadline) for room, then is
// answered by the failure policy and counted in
// meshwaf_checks_rejected_total{reason}.
type Limits struct {
	// MaxInFlight is the number of inspections running at once.
	MaxInFlight int
	// MaxBodyBytes is the sum of the request bodies of the inspections
	// running at once, each counted as the larger of its bytes and the
	// weight of the arguments it may hold (see ArgsWeightPerByte). A body
	// that counts more than MaxBodyBytes counts as MaxBodyBytes: it runs
	// only when no other body does, so no body is refused for its size.
	MaxBodyBytes int64
	// QueueWait is how long a check may wait for room; 0 rejects at once.
	QueueWait time.Duration
	// MaxStreams is the number of Check calls open at once, counted from
	// before their message is read: being received, waiting here or
	// inspected. Over it a call is refused with RESOURCE_EXHAUSTED before
	// its body is held in memory (Envoy applies its failure_mode_allow or
	// status_on_error). 0: StreamsPerInFlight × MaxInFlight; never
	// below MaxInFlight.
	MaxStreams int
}

// Rejection reasons, the values of the reason label of
// meshwaf_checks_rejected_total.
const (
	RejectInFlight  = "inflight"   // MaxInFlight inspections were running
	RejectBodyBytes = "body_bytes" // the body did not fit in MaxBodyBytes
)

// Resources are what the default limits are derived from.
type Resources struct {
	CPUs        int   // GOMAXPROCS
	MemoryLimit int64 // bytes the process may use; 0 when unknown
}

// Defaults of the derivation in DefaultLimits.
const (
	// InFlightPerCPU inspections per CPU: inspection is CPU-bound, so more
	// only slows each one down; a few per CPU let small checks run beside
	// a large body.
	InFlightPerCPU = 4
	// BodyBytesPerCPU of (weighted) body in flight per CPU: a body at
	// argumentsLimit weighs MaxArgsWeight and costs about 0.4 CPU-seconds
	// at paranoia level 1 (go run ./bench/flood -n 1 -body 16384), so one
	// per CPU is what finishes within Envoy's 500 ms; two per CPU did not.
	BodyBytesPerCPU = 512 << 10
	// MemoryReserve is the memory kept for the rule sets, the @rx DFAs
	// and the runtime before bodies are counted.
	MemoryReserve = 128 << 20
	// ArgsWeightPerByte and MaxArgsWeight count the arguments a body may
	// hold: CRS's work and memory per check grow with their number, not
	// with the bytes. A body of n bytes holds at most n/4 of them (a=1&),
	// each costs about 32 KiB of live heap at paranoia level 1 (512 body
	// bytes at MemoryPerBodyByte), and argumentsLimit (1000 by default)
	// stops them at 32 MiB: a JSON body of 16 KiB already gets there.
	ArgsWeightPerByte = 128
	MaxArgsWeight     = 512 << 10
	// MemoryPerBodyByte is the peak memory one counted body byte costs.
	MemoryPerBodyByte = 64
	// DefaultQueueWait is how long a check may wait for room by default.
	DefaultQueueWait = 100 * time.Millisecond
)

// DefaultLimits derives the limits from the resources:
//
//	MaxInFlight  = InFlightPerCPU × CPUs
//	MaxBodyBytes = min(BodyBytesPerCPU × CPUs, (MemoryLimit − MemoryReserve) / MemoryPerBodyByte)
//
// The memory term applies only when the limit is known; MaxBodyBytes is
// never below BodyBytesPerCPU.
func DefaultLimits(r Resources) Limits {
	cpus := max(r.CPUs, 1)
	body := int64(BodyBytesPerCPU) * int64(cpus)
	if r.MemoryLimit > 0 {
		body = min(body, (r.MemoryLimit-MemoryReserve)/MemoryPerBodyByte)
	}
	return Limits{
		MaxInFlight:  InFlightPerCPU * cpus,
		MaxBodyBytes: max(body, BodyBytesPerCPU),
		QueueWait:    DefaultQueueWait,
		MaxStreams:   StreamsPerInFlight * InFlightPerCPU * cpus,
	}
}

// DetectResources reads GOMAXPROCS and the memory limit: the smaller of the
// Go runtime's soft limit (GOMEMLIMIT) and the cgroup's (v2 memory.max of
// the process's cgroup, else v1 memory.limit_in_bytes). root is the file
// system holding /proc and /sys (os.DirFS("/") in production).
func DetectResources(root fs.FS) Resources {
	return detectResources(root, runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1))
}

// detectResources is DetectResources with the runtime's values given;
// goLimit is math.MaxInt64 when GOMEMLIMIT is not set.
func detectResources(root fs.FS, cpus int, goLimit int64) Resources {
	limit := cgroupMemoryLimit(root)
	if goLimit > 0 && goLimit < math.MaxInt64 && (limit == 0 || goLimit < limit) {
		limit = goLimit
	}
	return Resources{CPUs: cpus, MemoryLimit: limit}
}

// unlimited is the smallest value read as "no limit" (cgroup v1 writes a
// page-rounded MaxInt64).
const unlimited = 1 << 62

// cgroupMemoryLimit returns the memory limit of the process's cgroup, or 0.
func cgroupMemoryLimit(root fs.FS) int64 {
	var paths []string
	if data, err := fs.ReadFile(root, "proc/self/cgroup"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			// v2: "0::/path"; v1: "N:memory:/path" (or "N:cpu,memory:/path").
			parts := strings.SplitN(sc.Text(), ":", 3)
			if len(parts) != 3 {
				continue
			}
			dir := strings.Trim(parts[2], "/")
			switch {
			case parts[0] == "0" && parts[1] == "":
				paths = append(paths, joinPath("sys/fs/cgroup", dir, "memory.max"))
			case hasController(parts[1], "memory"):
				paths = append(paths, joinPath("sys/fs/cgroup/memory", dir, "memory.limit_in_bytes"))
			}
		}
	}
	// In a cgroup namespace (Kubernetes) the process's cgroup is the root.
	paths = append(paths, "sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes")
	for _, p := range paths {
		data, err := fs.ReadFile(root, p)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(data))
		if s == "max" {
			return 0
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= unlimited {
			return 0
		}
		return n
	}
	return 0
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

func joinPath(base, dir, file string) string {
	if dir == "" {
		return base + "/" + file
	}
	return base + "/" + dir + "/" + file
}

// admission counts the inspections in flight and their body bytes. Safe
// for concurrent use.
type admission struct {
	limits Limits

	mu       sync.Mutex
	inFlight int
	bytes    int64
	changed  chan struct{} // closed and replaced on every release
}

func newAdmission(l Limits) *admission {
	return &admission{limits: l, changed: make(chan struct{})}
}

// errExpired is acquire's answer when ctx ended while the check waited.
var errExpired = errors.New("check canceled while waiting for admission")

// acquire admits an inspection of body bytes, waiting at most QueueWait and
// never past ctx's deadline. It returns a release func, or the rejection
// reason, or errExpired when ctx ended first.
func (a *admission) acquire(ctx context.Context, body int64, now func() time.Time) (release func(), reason string, err error) {
	body = bodyWeight(body, a.limits.MaxBodyBytes)
	var timer <-chan time.Time
	for {
		a.mu.Lock()
		reason = a.blocked(body)
		if reason == "" {
			a.inFlight++
			a.bytes += body
			a.mu.Unlock()
			return func() { a.release(body) }, "", nil
		}
		changed := a.changed
		a.mu.Unlock()

		if timer == nil {
			wait := a.limits.QueueWait
			if d, ok := ctx.Deadline(); ok {
				wait = min(wait, d.Sub(now()))
			}
			if wait <= 0 {
				return nil, reason, nil
			}
			t := time.NewTimer(wait)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-changed:
		case <-timer:
			return nil, reason, nil
		case <-ctx.Done():
			return nil, "", errExpired
		}
	}
}

// bodyWeight is what a body of n bytes counts as against limit.
func bodyWeight(n, limit int64) int64 {
	args := min(n, MaxArgsWeight/ArgsWeightPerByte) * ArgsWeightPerByte
	return min(max(n, args), limit)
}

// blocked returns why body cannot be admitted now, or "". a.mu is held.
func (a *admission) blocked(body int64) string {
	switch {
	case a.inFlight >= a.limits.MaxInFlight:
		return RejectInFlight
	case a.bytes+body > a.limits.MaxBodyBytes:
		return RejectBodyBytes
	}
	return ""
}

func (a *admission) release(body int64) {
	a.mu.Lock()
	a.inFlight--
	a.bytes -= body
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
}

// bodyBytes returns the body bytes in flight.
func (a *admission) bodyBytes() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bytes
}
