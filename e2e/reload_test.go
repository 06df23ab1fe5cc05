package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/require"
)

// cmDir is a ConfigMap-style mount: meshwaf.yaml -> ..data/meshwaf.yaml,
// and an update swaps the ..data symlink in one rename.
type cmDir struct {
	dir string
	gen int
}

func newCMDir(t *testing.T, content string) *cmDir {
	t.Helper()
	c := &cmDir{dir: t.TempDir()}
	c.swap(t, content)
	require.NoError(t, os.Symlink(filepath.Join("..data", "meshwaf.yaml"), filepath.Join(c.dir, "meshwaf.yaml")))
	return c
}

func (c *cmDir) swap(t *testing.T, content string) {
	t.Helper()
	c.gen++
	gen := fmt.Sprintf("..2026_11_24_%03d", c.gen)
	require.NoError(t, os.Mkdir(filepath.Join(c.dir, gen), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(c.dir, gen, "meshwaf.yaml"), []byte(content), 0o600))
	tmp := filepath.Join(c.dir, "..data_tmp")
	require.NoError(t, os.Symlink(gen, tmp))
	require.NoError(t, os.Rename(tmp, filepath.Join(c.dir, "..data")))
}

const (
	reloadBlock = `defaultProfile: {mode: block}
`
	reloadDetect = `defaultProfile: {mode: detect}
`
	reloadBroken = `defaultProfile: {mode: block}
profiles:
- name: broken
  afterCRS: 'SecRule ARGS "@rx (" "id:1000001,phase:2,deny"'
`
	reloadProfiles = `defaultProfile: {mode: block}
profiles:
- name: db-relaxed
  exclusions:
  - tags: [attack-sqli]
  match:
    serviceAccounts: [default/db]
`
)

// TestReloadUnderLoad replaces the config several times (good, broken,
// good) while concurrent checks run against the real binary: no check
// fails or is malformed, the broken file changes nothing, and after each
// good swap the new rules decide.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	cm := newCMDir(t, reloadBlock)
	p := startServer(t, "--config", filepath.Join(cm.dir, "meshwaf.yaml"))
	conn := p.dial(t)
	client := authv3.NewAuthorizationClient(conn)

	var (
		total, failed atomic.Int64
		firstErr      atomic.Value
		stop          = make(chan struct{})
		wg            sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req := sqliCheck(fmt.Sprint(i), fmt.Sprintf("load-%d-%d", w, i))
				if i%2 == 1 {
					req = cleanCheck(fmt.Sprint(i), fmt.Sprintf("load-%d-%d", w, i))
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				resp, err := client.Check(ctx, req)
				cancel()
				total.Add(1)
				d := resp.GetDynamicMetadata().GetFields()["meshwaf_decision"].GetStringValue()
				if err != nil || resp.GetStatus() == nil || len(resp.GetDynamicMetadata().GetFields()) != 4 ||
					(d != "allow" && d != "deny" && d != "detect") {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("err=%v resp=%v", err, resp))
				}
			}
		}()
	}

	reloads := func(result string) float64 {
		v, _ := metricValue(p.metrics(t), "meshwaf_config_reloads_total", map[string]string{"result": result})
		return v
	}
	// decide sends a fresh seed SQLi, started after the swap was applied.
	decide := func() verdict { return verdictOf(t, p.check(t, sqliCheck("1", "probe"))) }
	waitReload := func(result string, want float64) {
		t.Helper()
		require.Eventually(t, func() bool { return reloads(result) >= want }, 30*time.Second, 50*time.Millisecond,
			"meshwaf_config_reloads_total{result=%q} never reached %v", result, want)
	}

	time.Sleep(300 * time.Millisecond) // load running
	require.Equal(t, "deny", decide().decision)

	cm.swap(t, reloadDetect)
	waitReload("success", 1)
	require.Equal(t, "detect", decide().decision)

	cm.swap(t, reloadBroken)
	waitReload("failure", 1)
	require.Equal(t, "detect", decide().decision, "a broken config changes nothing")
	require.Equal(t, 1.0, reloads("success"))
	code, _ := p.httpGet("/readyz")
	require.Equal(t, 200, code, "readiness stays up after a failed reload")

	cm.swap(t, reloadProfiles)
	waitReload("success", 2)
	v := decide()
	require.Equal(t, "allow", v.decision, "the db-relaxed profile takes checks to default/db")
	require.Equal(t, "db-relaxed", v.profile)

	cm.swap(t, reloadBlock)
	waitReload("success", 3)
	require.Equal(t, "deny", decide().decision)

	close(stop)
	wg.Wait()
	require.Zero(t, failed.Load(), "failed or malformed checks; first: %v", firstErr.Load())
	require.Greater(t, total.Load(), int64(20), "the load ran")
	require.True(t, p.hasLogMessage(t, "config reload failed; the rules in force are kept"))
	t.Logf("%d checks during 4 reloads, 0 failed", total.Load())
}

// TestSIGHUPWithoutConfig: serve started without --config has nothing to
// reload; SIGHUP is logged and ignored instead of ending the process.
func TestSIGHUPWithoutConfig(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	const msg = "SIGHUP ignored: serve runs without a config file, so there is nothing to reload"
	logged := func() int {
		n := 0
		for _, m := range p.logMessages(t) {
			if m == msg {
				n++
			}
		}
		return n
	}
	for i := range 2 {
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
		waitFor(t, 5*time.Second, "the SIGHUP log line", func() bool { return p.exited() || logged() == i+1 })
		require.False(t, p.exited(), "serve exited with code %d on SIGHUP", p.exitCode)
	}
	code, _ := p.httpGet("/readyz")
	require.Equal(t, http.StatusOK, code, "ready after SIGHUP")
	require.Equal(t, "deny", verdictOf(t, p.check(t, sqliCheck("hup", "req-hup"))).decision, "checks answered after SIGHUP")
}
