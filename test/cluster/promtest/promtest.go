// Package promtest runs a real Prometheus for tests: series are written as
// OpenMetrics text, turned into TSDB blocks by `promtool tsdb
// create-blocks-from openmetrics`, and served by `prometheus` on
// 127.0.0.1 with that TSDB, so queries go through Prometheus's own HTTP API
// and PromQL engine. The binaries come from .ci/tools.sh
// (MESHWAF_PROMETHEUS, MESHWAF_PROMTOOL).
//
// Typical use (ToolsFromEnv, NewWriter, Fill, Start, Server.Stop):
//
//	tl, err := promtest.ToolsFromEnv()
//	w := promtest.NewWriter(file)
//	w.Counter("istio_requests", promtest.Labels{...}, samples)
//	w.Close()
//	srv, err := promtest.Start(ctx, tl, dir, file)   // Fill + serve
//	defer srv.Stop()
//	... query srv.URL ...
package promtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Tools are the prometheus and promtool binaries.
type Tools struct{ Prometheus, Promtool string }

// ToolsFromEnv reads MESHWAF_PROMETHEUS and MESHWAF_PROMTOOL and checks
// that both name executables.
func ToolsFromEnv() (Tools, error) {
	t := Tools{Prometheus: os.Getenv("MESHWAF_PROMETHEUS"), Promtool: os.Getenv("MESHWAF_PROMTOOL")}
	var errs []error
	for _, v := range []struct{ name, path string }{{"MESHWAF_PROMETHEUS", t.Prometheus}, {"MESHWAF_PROMTOOL", t.Promtool}} {
		if v.path == "" {
			errs = append(errs, fmt.Errorf("%s is not set", v.name))
		} else if fi, err := os.Stat(v.path); err != nil {
			errs = append(errs, fmt.Errorf("%s names a missing tool: %w", v.name, err))
		} else if fi.IsDir() || fi.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("%s=%s is not an executable file", v.name, v.path))
		}
	}
	if len(errs) > 0 {
		return t, fmt.Errorf(`%w; build them with: eval "$(.ci/tools.sh)"`, errors.Join(errs...))
	}
	return t, nil
}

// Labels of one series.
type Labels map[string]string

// Sample is one value at a time.
type Sample struct {
	T     time.Time
	Value float64
}

// Writer writes OpenMetrics text. Each call writes one series of one
// family; calls for the same family must follow each other (OpenMetrics
// wants a family's series together). Close writes the terminating # EOF.
type Writer struct {
	w      *bufio.Writer
	family string
	err    error
}

// NewWriter writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriterSize(w, 1<<20)} }

// Counter writes the series family_total{labels} with the samples
// (timestamps increasing). family is the name without _total.
func (w *Writer) Counter(family string, l Labels, samples []Sample) {
	w.series(family, "counter", family+"_total", l, samples)
}

// Gauge writes the series name{labels} of a gauge family.
func (w *Writer) Gauge(name string, l Labels, samples []Sample) {
	w.series(name, "gauge", name, l, samples)
}

func (w *Writer) series(family, typ, name string, l Labels, samples []Sample) {
	if w.err != nil {
		return
	}
	if family != w.family {
		fmt.Fprintf(w.w, "# TYPE %s %s\n", family, typ)
		w.family = family
	}
	prefix := name + formatLabels(l) + " "
	buf := make([]byte, 0, 64)
	for _, s := range samples {
		buf = buf[:0]
		buf = append(buf, prefix...)
		buf = strconv.AppendFloat(buf, s.Value, 'g', -1, 64)
		buf = append(buf, ' ')
		buf = strconv.AppendFloat(buf, float64(s.T.UnixMilli())/1000, 'f', 3, 64)
		buf = append(buf, '\n')
		if _, err := w.w.Write(buf); err != nil {
			w.err = err
			return
		}
	}
}

// Close ends the exposition and flushes.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if _, err := w.w.WriteString("# EOF\n"); err != nil {
		return err
	}
	return w.w.Flush()
}

func formatLabels(l Labels) string {
	if len(l) == 0 {
		return ""
	}
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteString(`="`)
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(l[k]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// Fill turns the OpenMetrics file into TSDB blocks under tsdbDir with
// promtool. Blocks span up to a day, so a week of series makes a handful.
func Fill(ctx context.Context, tl Tools, openMetrics, tsdbDir string) error {
	cmd := exec.CommandContext(ctx, tl.Promtool, "tsdb", "create-blocks-from", "openmetrics",
		"--max-block-duration=24h", openMetrics, tsdbDir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("promtool tsdb create-blocks-from openmetrics: %w\n%s", err, out.String())
	}
	return nil
}

// Server is a running prometheus.
type Server struct {
	// URL is http://127.0.0.1:PORT.
	URL string
	// Dir holds the TSDB, the config and prometheus.log.
	Dir  string
	cmd  *exec.Cmd
	done chan error
	log  *os.File
}

// Start fills dir/tsdb from the OpenMetrics file and serves it (Fill, then
// Serve).
func Start(ctx context.Context, tl Tools, dir, openMetrics string) (*Server, error) {
	if err := Fill(ctx, tl, openMetrics, filepath.Join(dir, "tsdb")); err != nil {
		return nil, err
	}
	return Serve(ctx, tl, dir)
}

// Serve starts prometheus on a free 127.0.0.1 port with the TSDB in
// dir/tsdb, scraping nothing, and waits until it is ready (at most 2
// minutes). Retention is long: Prometheus measures it from the newest block,
// and tests query series at fixed past times.
func Serve(ctx context.Context, tl Tools, dir string) (*Server, error) {
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global: {}\n"), 0o644); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{URL: "http://" + addr, Dir: dir, log: logf, done: make(chan error, 1)}
	s.cmd = exec.Command(tl.Prometheus,
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--storage.tsdb.retention.time=100y",
		"--web.listen-address="+addr,
		"--log.level=warn")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { s.done <- s.cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case err := <-s.done:
			s.done <- err
			return nil, fmt.Errorf("prometheus exited before it was ready: %v\n%s", err, s.LogTail())
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if ready(s.URL) {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("prometheus at %s not ready after 2m\n%s", s.URL, s.LogTail())
		}
	}
}

func ready(url string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url + "/-/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Stop ends prometheus (SIGTERM, then SIGKILL after 10 s) and returns how
// it exited if that was not the SIGTERM.
func (s *Server) Stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		err = <-s.done
	}
	s.done <- err
	s.log.Close()
	if s.cmd.ProcessState != nil && s.cmd.ProcessState.Success() {
		return nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM {
		return nil
	}
	return err
}

// LogTail is the end of prometheus.log.
func (s *Server) LogTail() string {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "prometheus.log"))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
