package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheckBuild(t *testing.T) {
	if err := checkBuild(true, false); err != nil {
		t.Errorf("no_fs_access build refused: %v", err)
	}
	if err := checkBuild(false, true); err != nil {
		t.Errorf("-allow-fs-access refused: %v", err)
	}
	err := checkBuild(false, false)
	if err == nil {
		t.Fatal("build without no_fs_access accepted")
	}
	for _, want := range []string{"go run -tags no_fs_access ./bench/coraza", "-allow-fs-access"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %q", err, want)
		}
	}
}

// fakeClock advances by step each time an op runs.
type fakeClock struct{ t, step time.Duration }

func (c *fakeClock) now() time.Time { return time.Unix(0, 0).Add(c.t) }
func (c *fakeClock) op() error      { c.t += c.step; return nil }

func TestWarmUp(t *testing.T) {
	for _, tc := range []struct {
		name     string
		step, d  time.Duration
		wantRuns int
	}{
		{"fast shape fills the time", time.Millisecond, 300 * time.Millisecond, 300},
		{"128 KiB shape runs once", 4 * time.Second, 300 * time.Millisecond, 1},
		{"just over a third of the time", 101 * time.Millisecond, 300 * time.Millisecond, 3},
		{"no warm-up time still runs once", time.Millisecond, 0, 1},
	} {
		c := &fakeClock{step: tc.step}
		n, err := warmUp(c.op, tc.d, c.now)
		if err != nil || n != tc.wantRuns {
			t.Errorf("%s: warmUp = %d, %v; want %d runs", tc.name, n, err, tc.wantRuns)
		}
	}
	boom := errors.New("boom")
	if _, err := warmUp(func() error { return boom }, time.Second, time.Now); !errors.Is(err, boom) {
		t.Errorf("warmUp error = %v, want %v", err, boom)
	}
}

func TestSummarize(t *testing.T) {
	r := func(side, name string, ns, cpu float64, allocs int64) result {
		return result{Side: side, Name: name, NsPerOp: ns, CPUNsPerOp: cpu, AllocsPerOp: allocs}
	}
	all := map[string]map[string][]result{
		sideStock: {
			// odd count: the middle value, whatever the order
			"inprocess/GET": {r(sideStock, "inprocess/GET", 300, 30, 7), r(sideStock, "inprocess/GET", 100, 90, 8), r(sideStock, "inprocess/GET", 200, 60, 9)},
			// only stock ran it: no row
			"grpc/GET": {r(sideStock, "grpc/GET", 1, 1, 1)},
		},
		sideMeshwaf: {
			// even count: the mean of the middle two
			"inprocess/GET": {r(sideMeshwaf, "inprocess/GET", 40, 10, 3), r(sideMeshwaf, "inprocess/GET", 1000, 10, 4), r(sideMeshwaf, "inprocess/GET", 60, 30, 5), r(sideMeshwaf, "inprocess/GET", 20, 50, 6)},
		},
	}
	rows := summarize(all, []string{"inprocess/GET", "grpc/GET"})
	if len(rows) != 1 {
		t.Fatalf("summarize = %+v, want one row", rows)
	}
	got := rows[0]
	want := summaryRow{name: "inprocess/GET", stockWall: 200, meshwafWall: 50, stockCPU: 60, meshwafCPU: 20, stockAllocs: 7, meshwafAllocs: 3}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if got.wallRatio() != 4 || got.cpuRatio() != 3 {
		t.Errorf("ratios = %v, %v; want 4, 3", got.wallRatio(), got.cpuRatio())
	}
}

func TestBenchtimeFor(t *testing.T) {
	for _, tc := range []struct {
		benchtime string
		op        time.Duration
		min       int
		want      string
	}{
		{"1s", time.Millisecond, 3, "1s"},
		{"1s", 4 * time.Second, 3, "3x"},
		{"1s", 400 * time.Millisecond, 3, "3x"},
		{"1s", 300 * time.Millisecond, 3, "1s"},
		{"10s", 2500 * time.Millisecond, 3, "10s"},
		{"5x", 4 * time.Second, 3, "5x"},
		{"1s", 4 * time.Second, 0, "1s"},
	} {
		if got := benchtimeFor(tc.benchtime, tc.op, tc.min); got != tc.want {
			t.Errorf("benchtimeFor(%q, %v, %d) = %q, want %q", tc.benchtime, tc.op, tc.min, got, tc.want)
		}
	}
}

func TestCheckMinRatio(t *testing.T) {
	row := func(name string, stock, meshwaf float64) summaryRow {
		return summaryRow{name: name, stockWall: stock, meshwafWall: meshwaf}
	}
	for _, tc := range []struct {
		name    string
		rows    []summaryRow
		min     float64
		wantErr []string // substrings; nil: no error
		notIn   []string
	}{
		{"all above", []summaryRow{row("inprocess/GET", 2, 1), row("grpc/GET", 1.5, 1)}, 1.4, nil, nil},
		{"exactly at the threshold", []summaryRow{row("inprocess/GET", 1.4, 1)}, 1.4, nil, nil},
		{"one below is named", []summaryRow{row("inprocess/GET", 2, 1), row("grpc/SQLi", 1.3, 1)}, 1.4,
			[]string{"grpc/SQLi 1.30x", "-min-ratio 1.40x"}, []string{"inprocess/GET"}},
		{"every one below is named", []summaryRow{row("inprocess/GET", 1, 1), row("grpc/SQLi", 0.5, 1)}, 1.4,
			[]string{"inprocess/GET 1.00x", "grpc/SQLi 0.50x"}, nil},
		{"meshwaf slower", []summaryRow{row("inprocess/JSON1KiB", 1, 2)}, 1, []string{"inprocess/JSON1KiB 0.50x"}, nil},
		{"not a number", []summaryRow{row("inprocess/GET", 0, 0)}, 1.4, []string{"inprocess/GET NaN"}, nil},
		{"nothing measured", nil, 1.4, []string{"no shape was measured"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkMinRatio(tc.rows, tc.min)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			for _, w := range tc.notIn {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error %q names %q, which is above the threshold", err, w)
				}
			}
		})
	}
}
