package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// tools are the binaries .ci/tools.sh builds and caches.
type tools struct {
	etcd, apiserver, istioctl string
}

// toolsFromEnv reads the paths .ci/tools.sh exports.
// toolsInstall is the command that builds the tools (cached per version)
// and prints the variables that name them.
const toolsInstall = `eval "$(.ci/tools.sh)"  # from the repo root`

func toolsFromEnv() (tools, error) {
	t := tools{
		etcd:      os.Getenv("MESHWAF_ETCD"),
		apiserver: os.Getenv("MESHWAF_KUBE_APISERVER"),
		istioctl:  os.Getenv("MESHWAF_ISTIOCTL"),
	}
	var errs []error
	for _, v := range []struct{ name, path string }{
		{"MESHWAF_ETCD", t.etcd}, {"MESHWAF_KUBE_APISERVER", t.apiserver}, {"MESHWAF_ISTIOCTL", t.istioctl},
	} {
		if v.path == "" {
			errs = append(errs, fmt.Errorf("%s is not set", v.name))
		} else if fi, err := os.Stat(v.path); err != nil {
			errs = append(errs, fmt.Errorf("%s names a missing tool: %w", v.name, err))
		} else if fi.IsDir() || fi.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("%s=%s is not an executable file", v.name, v.path))
		}
	}
	if len(errs) > 0 {
		return t, fmt.Errorf("%w; build them and set the variables with: %s", errors.Join(errs...), toolsInstall)
	}
	return t, nil
}

// cluster is an etcd and a kube-apiserver on 127.0.0.1, both children of the
// test process, with token authentication and the AlwaysAllow authorizer.
type cluster struct {
	dir        string
	server     string
	kubeconfig string
	config     *rest.Config
	dyn        dynamic.Interface
	mapper     *restmapper.DeferredDiscoveryRESTMapper

	procs []*exec.Cmd
	logs  []string
}

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start launches a child whose output goes to dir/name.log. The child gets
// SIGKILL if the test process dies first.
func (c *cluster) start(name string, path string, args ...string) error {
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	f.Close()
	c.procs = append(c.procs, cmd)
	c.logs = append(c.logs, logPath)
	return nil
}

// stop ends the children (API server first) and waits for them.
func (c *cluster) stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	c.procs = nil
}

// logTails returns the last lines of each child's log, for failure messages.
func (c *cluster) logTails() string {
	var b strings.Builder
	for _, p := range c.logs {
		data, _ := os.ReadFile(p)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", filepath.Base(p), len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

// startCluster starts etcd and kube-apiserver in dir and waits until the API
// server is ready.
func startCluster(ctx context.Context, tl tools, dir string) (c *cluster, err error) {
	c = &cluster{dir: dir}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.logTails())
			c.stop()
		}
	}()

	clientPort, err := freePort()
	if err != nil {
		return c, err
	}
	peerPort, err := freePort()
	if err != nil {
		return c, err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	if err := c.start("etcd", tl.etcd,
		"--name=test",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=test="+peerURL,
		"--unsafe-no-fsync",
		"--log-level=warn",
	); err != nil {
		return c, err
	}
	if err := waitFor(ctx, 60*time.Second, func() error {
		resp, err := http.Get(clientURL + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd health: %s", resp.Status)
		}
		return nil
	}); err != nil {
		return c, fmt.Errorf("etcd did not become healthy: %w", err)
	}

	pki, err := writePKI(dir)
	if err != nil {
		return c, err
	}
	port, err := freePort()
	if err != nil {
		return c, err
	}
	c.server = fmt.Sprintf("https://127.0.0.1:%d", port)
	if err := c.start("kube-apiserver", tl.apiserver,
		"--etcd-servers="+clientURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--tls-cert-file="+pki.serverCert,
		"--tls-private-key-file="+pki.serverKey,
		"--token-auth-file="+pki.tokenFile,
		"--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki.saPub,
		"--service-account-signing-key-file="+pki.saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--allow-privileged=true",
	); err != nil {
		return c, err
	}

	c.config = &rest.Config{
		Host:                      c.server,
		BearerToken:               pki.token,
		TLSClientConfig:           rest.TLSClientConfig{CAFile: pki.caCert},
		QPS:                       200,
		Burst:                     400,
		UserAgent:                 "meshwaf-cluster-test",
		WarningHandlerWithContext: warningCollector{},
	}
	httpClient, err := rest.HTTPClientFor(c.config)
	if err != nil {
		return c, err
	}
	if err := waitFor(ctx, 120*time.Second, func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.server+"/readyz", nil)
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	}); err != nil {
		return c, fmt.Errorf("kube-apiserver did not become ready: %w", err)
	}

	c.kubeconfig = filepath.Join(dir, "kubeconfig")
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q}
users:
- name: admin
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, c.server, pki.caCert, pki.token)
	if err := os.WriteFile(c.kubeconfig, []byte(kubeconfig), 0o600); err != nil {
		return c, err
	}

	if c.dyn, err = dynamic.NewForConfig(c.config); err != nil {
		return c, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(c.config)
	if err != nil {
		return c, err
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	return c, nil
}

// waitFor polls check every 200ms until it returns nil, the context ends or
// timeout passes; it returns the last error.
func waitFor(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type pkiFiles struct {
	caCert, serverCert, serverKey string
	saKey, saPub                  string
	tokenFile, token              string
}

// writePKI writes a CA, a serving certificate for 127.0.0.1 and localhost,
// the service-account signing key pair and the token file into dir.
func writePKI(dir string) (pkiFiles, error) {
	p := pkiFiles{
		caCert:     filepath.Join(dir, "ca.crt"),
		serverCert: filepath.Join(dir, "server.crt"),
		serverKey:  filepath.Join(dir, "server.key"),
		saKey:      filepath.Join(dir, "sa.key"),
		saPub:      filepath.Join(dir, "sa.pub"),
		tokenFile:  filepath.Join(dir, "tokens.csv"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "meshwaf-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return p, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return p, err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return p, err
	}
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return p, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return p, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return p, err
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return p, err
	}
	p.token = hex.EncodeToString(tok)

	files := []struct {
		path string
		data []byte
	}{
		{p.caCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})},
		{p.serverCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER})},
		{p.serverKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: srvKeyDER})},
		{p.saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})},
		{p.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})},
		{p.tokenFile, fmt.Appendf(nil, "%s,admin,admin,\"system:masters\"\n", p.token)},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return p, err
		}
	}
	// The CA must verify what the server presents.
	if _, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey); err != nil {
		return p, err
	}
	return p, nil
}

// warnings collects the API server's Warning headers of one request; put one
// in the request's context with withWarnings.
type warnings struct {
	mu   sync.Mutex
	list []string
}

type warningsKey struct{}

func withWarnings(ctx context.Context) (context.Context, *warnings) {
	w := &warnings{}
	return context.WithValue(ctx, warningsKey{}, w), w
}

func (w *warnings) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.list...)
}

type warningCollector struct{}

func (warningCollector) HandleWarningHeaderWithContext(ctx context.Context, _ int, _ string, text string) {
	if w, ok := ctx.Value(warningsKey{}).(*warnings); ok {
		w.mu.Lock()
		w.list = append(w.list, text)
		w.mu.Unlock()
	}
}

// resource maps an object to its REST resource, refreshing discovery once
// when the kind is unknown (CRDs installed after the first lookup).
func (c *cluster) resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := u.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		return c.dyn.Resource(m.Resource).Namespace(ns), nil
	}
	return c.dyn.Resource(m.Resource), nil
}

// create sends one server-side create with strict field validation, so an
// unknown or duplicate field is an error rather than a dropped value. With
// dryRun the server runs defaulting, validation and admission but stores
// nothing. It returns the server's warnings.
func (c *cluster) create(ctx context.Context, u *unstructured.Unstructured, dryRun bool) ([]string, error) {
	ctx, w := withWarnings(ctx)
	ri, err := c.resource(u)
	if err != nil {
		return nil, err
	}
	opts := metav1.CreateOptions{FieldValidation: "Strict", FieldManager: "meshwaf-test"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Create(ctx, u.DeepCopy(), opts)
	return w.get(), err
}

// ensureNamespace creates namespace ns unless it exists.
func (c *cluster) ensureNamespace(ctx context.Context, ns string) error {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Namespace")
	u.SetName(ns)
	_, err := c.create(ctx, u, false)
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCRDs creates the CustomResourceDefinitions in data and waits until
// all are established.
func (c *cluster) installCRDs(ctx context.Context, data []byte) (int, error) {
	objs, err := decodeObjects(data)
	if err != nil {
		return 0, err
	}
	var names []string
	for _, u := range objs {
		if u.GetKind() != "CustomResourceDefinition" {
			continue
		}
		if _, err := c.dyn.Resource(crdGVR).Create(ctx, u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return 0, fmt.Errorf("creating CRD %s: %w", u.GetName(), err)
		}
		names = append(names, u.GetName())
	}
	for _, name := range names {
		if err := waitFor(ctx, 60*time.Second, func() error {
			got, err := c.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, cond := range conds {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
			return fmt.Errorf("CRD %s not established", name)
		}); err != nil {
			return 0, err
		}
	}
	c.mapper.Reset()
	return len(names), nil
}

// run runs a command and returns its stdout; stderr is included in the error.
func run(ctx context.Context, dir string, name string, args ...string) ([]byte, []byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w\nstderr:\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), stderr.Bytes(), err
}
