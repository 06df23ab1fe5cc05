package envoy

// A Proxy: its listener, lifecycle and counters.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Proxy is one running stand-in sidecar.
type Proxy struct {
	cfg      Config
	lis      net.Listener
	srv      *http.Server
	conn     *grpc.ClientConn
	client   *http.Client
	upstream *url.URL
	localTLS string // principal of the local certificate

	ok, denied, errs, fmAllowed, tooLarge, forwarded atomic.Int64
}

// Start listens on 127.0.0.1 and serves until Close.
func Start(cfg Config) (*Proxy, error) {
	up, err := url.Parse(cfg.Upstream)
	if err != nil || up.Host == "" {
		return nil, fmt.Errorf("envoy: upstream %q is not a URL", cfg.Upstream)
	}
	conn, err := grpc.NewClient(cfg.AuthzAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("envoy: authz client: %w", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	p := &Proxy{
		cfg:      cfg,
		conn:     conn,
		upstream: up,
		client: &http.Client{
			Transport: upstreamTransport(cfg.HTTP2),
			Timeout:   30 * time.Second,
			// Envoy's router does not follow redirects by default.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	if cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		if len(tc.Certificates) > 0 && tc.Certificates[0].Leaf != nil {
			p.localTLS = principal(tc.Certificates[0].Leaf)
		}
		p.lis = tls.NewListener(lis, tc) // (no 505 rewriting under TLS)
	} else {
		p.lis = codecListener{lis}
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if cc, ok := c.(*codecConn); ok {
				return context.WithValue(ctx, connKey{}, cc)
			}
			return ctx
		},
	}
	if cfg.HTTP2 {
		p.srv.Protocols = new(http.Protocols)
		p.srv.Protocols.SetHTTP1(true)
		p.srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go func() { _ = p.srv.Serve(p.lis) }()
	return p, nil
}

func upstreamTransport(http2 bool) *http.Transport {
	t := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	if http2 {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return t
}

// Addr is the listener's address (127.0.0.1:port).
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// URL is the base URL of the listener.
func (p *Proxy) URL() string {
	if p.cfg.TLS != nil {
		return "https://" + p.Addr()
	}
	return "http://" + p.Addr()
}

// Close stops the listener and the authorization client.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	p.client.CloseIdleConnections()
	return errors.Join(err, p.conn.Close())
}

// Stats returns the counters so far.
func (p *Proxy) Stats() Stats {
	return Stats{
		OK: p.ok.Load(), Denied: p.denied.Load(), Error: p.errs.Load(),
		FailureModeAllowed: p.fmAllowed.Load(), PayloadTooLarge: p.tooLarge.Load(),
		Upstream: p.forwarded.Load(),
	}
}

// codecListener wraps accepted connections in codecConn.
type codecListener struct{ net.Listener }

func (l codecListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &codecConn{Conn: c}, nil
}

type connKey struct{}

// codecConn turns net/http's own "505 HTTP Version Not Supported", sent
// before any handler runs, into the 400 that Envoy's HTTP/1 codec sends for
// every request it cannot parse.
type codecConn struct {
	net.Conn
	served atomic.Bool
}

var status505 = []byte("HTTP/1.1 505 ")

func (c *codecConn) Write(b []byte) (int, error) {
	if i := bytes.Index(b, []byte("\r\n")); i > 0 && !c.served.Load() && bytes.HasPrefix(b, status505) {
		out := append([]byte("HTTP/1.1 400 Bad Request"), b[i:]...)
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}
