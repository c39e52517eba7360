package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCertPEM(data)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return c
}

func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "pki")
	if err := Init(dir); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("dir mode = %v, want 0700", got)
	}
	if got := mode(t, filepath.Join(dir, CAKeyFile)); got != 0o600 {
		t.Errorf("ca.key mode = %v, want 0600", got)
	}
	ca := readCert(t, filepath.Join(dir, CACertFile))
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("ca certificate: IsCA=%v KeyUsage=%v, want a signing CA", ca.IsCA, ca.KeyUsage)
	}
	if life := ca.NotAfter.Sub(ca.NotBefore); life < CAValidity {
		t.Errorf("ca validity = %v, want at least %v", life, CAValidity)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("ca is not self-signed: %v", err)
	}
	if _, err := LoadCA(dir); err != nil {
		t.Errorf("LoadCA: %v", err)
	}
}

func TestIssue(t *testing.T) {
	tests := []struct {
		name     string
		req      IssueRequest
		wantDNS  []string
		wantIPs  []string
		wantLife time.Duration
	}{
		{
			name:     "defaults",
			req:      IssueRequest{Name: "agent-1", Role: RoleSource},
			wantDNS:  []string{"localhost"},
			wantIPs:  []string{"127.0.0.1", "::1"},
			wantLife: DefaultValidity,
		},
		{
			name:     "explicit sans and validity",
			req:      IssueRequest{Name: "tgt.example_2", Role: RoleTarget, DNS: []string{"backup.example.net"}, IPs: []net.IP{net.ParseIP("10.0.0.7")}, Validity: 48 * time.Hour},
			wantDNS:  []string{"backup.example.net"},
			wantIPs:  []string{"10.0.0.7"},
			wantLife: 48 * time.Hour,
		},
		{
			name:     "ip only keeps no default dns",
			req:      IssueRequest{Name: "ctl", Role: RoleController, IPs: []net.IP{net.ParseIP("192.0.2.1")}},
			wantIPs:  []string{"192.0.2.1"},
			wantLife: DefaultValidity,
		},
		{
			name:     "validity past the ca is cut at the ca",
			req:      IssueRequest{Name: "cli", Role: RoleClient, Validity: 20 * 365 * 24 * time.Hour},
			wantDNS:  []string{"localhost"},
			wantIPs:  []string{"127.0.0.1", "::1"},
			wantLife: CAValidity,
		},
	}
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	pool, err := LoadPool(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPath, keyPath, err := Issue(dir, tt.req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if want := filepath.Join(dir, tt.req.Name+".crt"); certPath != want {
				t.Errorf("cert path = %s, want %s", certPath, want)
			}
			if want := filepath.Join(dir, tt.req.Name+".key"); keyPath != want {
				t.Errorf("key path = %s, want %s", keyPath, want)
			}
			if got := mode(t, keyPath); got != 0o600 {
				t.Errorf("key mode = %v, want 0600", got)
			}
			if _, err := tls.LoadX509KeyPair(certPath, keyPath); err != nil {
				t.Errorf("key pair does not load: %v", err)
			}
			c := readCert(t, certPath)
			if c.Subject.CommonName != tt.req.Name {
				t.Errorf("CommonName = %q, want %q", c.Subject.CommonName, tt.req.Name)
			}
			if c.IsCA {
				t.Error("leaf is a CA")
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if !slices.Contains(c.ExtKeyUsage, usage) {
					t.Errorf("ExtKeyUsage %v lacks %v", c.ExtKeyUsage, usage)
				}
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("verify for %v: %v", usage, err)
				}
			}
			if !slices.Equal(c.DNSNames, tt.wantDNS) {
				t.Errorf("DNSNames = %q, want %q", c.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("IPAddresses = %q, want %q", ips, tt.wantIPs)
			}
			// NotBefore is backdated, and the ca clamp is to the ca's
			// NotAfter, so allow both on top of the requested lifetime.
			life := c.NotAfter.Sub(c.NotBefore)
			if life < tt.wantLife-time.Hour || life > tt.wantLife+backdate+time.Hour {
				t.Errorf("lifetime = %v, want about %v", life, tt.wantLife)
			}
			id, err := IdentityFromCert(c)
			if err != nil {
				t.Fatalf("IdentityFromCert: %v", err)
			}
			if id != tt.req.Identity() {
				t.Errorf("identity = %v, want %v", id, tt.req.Identity())
			}
			wantURI := "ferry://" + string(tt.req.Role) + "/" + tt.req.Name
			if len(c.URIs) != 1 || c.URIs[0].String() != wantURI {
				t.Errorf("URIs = %v, want [%s]", c.URIs, wantURI)
			}
		})
	}
}

func TestRefuseOverwrite(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	caBefore, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	err = Init(dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, CACertFile)) {
		t.Errorf("second Init: err = %v, want a refusal naming ca.crt", err)
	}
	caAfter, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if string(caAfter) != string(caBefore) {
		t.Error("second Init changed ca.crt")
	}

	// Only the key left behind must still block Init, or a new key would
	// land next to nothing and the old one be lost.
	keyOnly := t.TempDir()
	if err := os.WriteFile(filepath.Join(keyOnly, CAKeyFile), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Init(keyOnly); err == nil || !strings.Contains(err.Error(), CAKeyFile) {
		t.Errorf("Init over a lone ca.key: err = %v, want a refusal naming ca.key", err)
	}

	req := IssueRequest{Name: "src", Role: RoleSource}
	certPath, _, err := Issue(dir, req)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(certPath)
	for _, role := range []Role{RoleSource, RoleTarget} {
		_, _, err := Issue(dir, IssueRequest{Name: "src", Role: role})
		if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") || !strings.Contains(err.Error(), "src.") {
			t.Errorf("reissue as %s: err = %v, want a refusal naming src.crt", role, err)
		}
	}
	after, _ := os.ReadFile(certPath)
	if string(after) != string(before) {
		t.Error("refused Issue changed src.crt")
	}
}

func TestIssueRejects(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		req     IssueRequest
		wantErr string
	}{
		{"empty name", IssueRequest{Name: "", Role: RoleSource}, "invalid name"},
		{"long name", IssueRequest{Name: strings.Repeat("a", 65), Role: RoleSource}, "invalid name"},
		{"slash", IssueRequest{Name: "../evil", Role: RoleSource}, "invalid name"},
		{"space", IssueRequest{Name: "a b", Role: RoleSource}, "invalid name"},
		{"dot dot", IssueRequest{Name: "..", Role: RoleSource}, "reserved"},
		{"ca files", IssueRequest{Name: "ca", Role: RoleController}, "reserved"},
		{"unknown role", IssueRequest{Name: "x", Role: "admin"}, "invalid role"},
		{"empty role", IssueRequest{Name: "x"}, "invalid role"},
		{"negative validity", IssueRequest{Name: "x", Role: RoleClient, Validity: -time.Hour}, "invalid validity"},
		{"empty dns", IssueRequest{Name: "x", Role: RoleClient, DNS: []string{""}}, "invalid dns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Issue(dir, tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Issue: err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	if _, _, err := Issue(t.TempDir(), IssueRequest{Name: "x", Role: RoleClient}); err == nil || !strings.Contains(err.Error(), CACertFile) {
		t.Errorf("Issue without a CA: err = %v, want it to name ca.crt", err)
	}
}

func TestParseRole(t *testing.T) {
	tests := []struct {
		in      string
		want    Role
		wantErr bool
	}{
		{"controller", RoleController, false},
		{"source", RoleSource, false},
		{"target", RoleTarget, false},
		{"client", RoleClient, false},
		{"Source", "", true},
		{"", "", true},
		{"admin", "", true},
	}
	for _, tt := range tests {
		got, err := ParseRole(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseRole(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestIdentityFromCert(t *testing.T) {
	uri := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	tests := []struct {
		name string
		uris []*url.URL
		want Identity
		// wantErr is empty for success.
		wantErr string
	}{
		{"round trip", []*url.URL{Identity{Name: "n-1.a_b", Role: RoleTarget}.URI()}, Identity{Name: "n-1.a_b", Role: RoleTarget}, ""},
		{"foreign uris ignored", []*url.URL{uri("spiffe://example/x"), uri("ferry://client/c")}, Identity{Name: "c", Role: RoleClient}, ""},
		{"none", nil, Identity{}, "no ferry identity"},
		{"only foreign", []*url.URL{uri("https://example.net/")}, Identity{}, "no ferry identity"},
		{"two identities", []*url.URL{uri("ferry://source/a"), uri("ferry://target/a")}, Identity{}, "2 ferry uris"},
		{"bad role", []*url.URL{uri("ferry://admin/a")}, Identity{}, "parse role"},
		{"no name", []*url.URL{uri("ferry://source")}, Identity{}, "want exactly"},
		{"nested path", []*url.URL{uri("ferry://source/a/b")}, Identity{}, "invalid name"},
		{"query", []*url.URL{uri("ferry://source/a?role=controller")}, Identity{}, "want exactly"},
		{"port", []*url.URL{uri("ferry://source:1/a")}, Identity{}, "want exactly"},
		{"user", []*url.URL{uri("ferry://controller@source/a")}, Identity{}, "want exactly"},
		{"escaped", []*url.URL{uri("ferry://source/a%2Fb")}, Identity{}, "want exactly"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := IdentityFromCert(&x509.Certificate{URIs: tt.uris})
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("IdentityFromCert = %v, %v; want %v", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrNoIdentity) {
				t.Fatalf("IdentityFromCert = %v, %v; want ErrNoIdentity containing %q", got, err, tt.wantErr)
			}
		})
	}
}

// handshake runs one TLS connection over 127.0.0.1 and returns what each
// side saw. With TLS 1.3 the client finishes its handshake before the server
// has judged the client certificate, so the client's verdict is the first
// read: the server's "ok" or its alert.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (seen Identity, serverErr, clientErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		err error
		id  Identity
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		id, err := verifiedIdentity(tc.ConnectionState())
		if err == nil {
			_, err = tc.Write([]byte("ok"))
		}
		done <- result{err: err, id: id}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), clientCfg)
	if err == nil {
		var got []byte
		got, err = io.ReadAll(conn)
		if err == nil && string(got) != "ok" {
			err = errors.New("server said " + string(got))
		}
		conn.Close()
	}
	r := <-done
	return r.id, r.err, err
}

func TestHandshake(t *testing.T) {
	p := NewTestPKI(t, "")
	other := NewTestPKI(t, "")
	controllerClient := func(pk *TestPKI) *tls.Config { return pk.ClientTLS("ctl", RoleController, RoleSource) }
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: p.Pool()}
	tls12 := controllerClient(p)
	// A foreign certificate must be judged by a peer that trusts only p,
	// so each foreign side still trusts p itself.
	mustCfg := func(cfg *tls.Config, err error) *tls.Config {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	foreignClient := mustCfg(ClientConfig(other.Cert("ctl", RoleController), p.Pool(), RoleSource))
	foreignServer := mustCfg(ServerConfig(other.Cert("src", RoleSource), p.Pool(), RoleController))
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	tests := []struct {
		name   string
		server *tls.Config
		client *tls.Config
		// Errors are checked by errors.Is when set, else by substring;
		// an empty want means success.
		wantServerIs  error
		wantServer    string
		wantClientIs  error
		wantClient    string
		wantPeer      Identity
		wantPeerCheck bool
	}{
		{
			name:          "allowed role",
			server:        p.ServerTLS("src", RoleSource, RoleController),
			client:        controllerClient(p),
			wantPeer:      Identity{Name: "ctl", Role: RoleController},
			wantPeerCheck: true,
		},
		{
			name:          "one of several allowed roles",
			server:        p.ServerTLS("src", RoleSource, RoleController, RoleTarget),
			client:        p.ClientTLS("tgt", RoleTarget, RoleSource),
			wantPeer:      Identity{Name: "tgt", Role: RoleTarget},
			wantPeerCheck: true,
		},
		{
			name:       "no client certificate",
			server:     p.ServerTLS("src", RoleSource, RoleController),
			client:     noCert,
			wantServer: "client didn't provide a certificate",
			wantClient: "certificate required",
		},
		{
			name:       "client from another ca",
			server:     p.ServerTLS("src", RoleSource, RoleController),
			client:     foreignClient,
			wantServer: "certificate signed by unknown authority",
			wantClient: "remote error: tls: ",
		},
		{
			name:         "client of the wrong role",
			server:       p.ServerTLS("src", RoleSource, RoleController),
			client:       p.ClientTLS("cli", RoleClient, RoleSource),
			wantServerIs: ErrRoleNotAllowed,
			wantClient:   "remote error: tls: bad certificate",
		},
		{
			name:         "server of the wrong role",
			server:       p.ServerTLS("tgt", RoleTarget, RoleController),
			client:       controllerClient(p),
			wantServer:   "remote error: tls: bad certificate",
			wantClientIs: ErrRoleNotAllowed,
		},
		{
			name:       "server from another ca",
			server:     foreignServer,
			client:     controllerClient(p),
			wantServer: "remote error: tls: ",
			wantClient: "certificate signed by unknown authority",
		},
		{
			name:       "tls 1.2 refused",
			server:     p.ServerTLS("src", RoleSource, RoleController),
			client:     tls12,
			wantServer: "unsupported versions",
			wantClient: "protocol version",
		},
	}
	check := func(t *testing.T, side string, err, wantIs error, want string) {
		t.Helper()
		switch {
		case wantIs != nil:
			if !errors.Is(err, wantIs) {
				t.Errorf("%s error = %v, want %v", side, err, wantIs)
			}
		case want != "":
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s error = %v, want it to contain %q", side, err, want)
			}
		case err != nil:
			t.Errorf("%s error = %v, want success", side, err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen, serverErr, clientErr := handshake(t, tt.server, tt.client)
			t.Logf("server: %v; client: %v", serverErr, clientErr)
			check(t, "server", serverErr, tt.wantServerIs, tt.wantServer)
			check(t, "client", clientErr, tt.wantClientIs, tt.wantClient)
			if tt.wantPeerCheck && seen != tt.wantPeer {
				t.Errorf("server saw peer %v, want %v", seen, tt.wantPeer)
			}
		})
	}
}

func TestTLSConfigFromFiles(t *testing.T) {
	p := NewTestPKI(t, "")
	srvCert, srvKey := p.Issue("src", RoleSource)
	cliCert, cliKey := p.Issue("ctl", RoleController)
	server, err := ServerTLSConfig(srvCert, srvKey, p.CAFile, RoleController)
	if err != nil {
		t.Fatalf("ServerTLSConfig: %v", err)
	}
	client, err := ClientTLSConfig(cliCert, cliKey, p.CAFile, RoleSource)
	if err != nil {
		t.Fatalf("ClientTLSConfig: %v", err)
	}
	if server.MinVersion != tls.VersionTLS13 || client.MinVersion != tls.VersionTLS13 {
		t.Errorf("MinVersion = %x / %x, want TLS 1.3", server.MinVersion, client.MinVersion)
	}
	if server.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("ClientAuth = %v, want RequireAndVerifyClientCert", server.ClientAuth)
	}
	seen, serverErr, clientErr := handshake(t, server, client)
	if serverErr != nil || clientErr != nil {
		t.Fatalf("handshake: server %v, client %v", serverErr, clientErr)
	}
	if want := (Identity{Name: "ctl", Role: RoleController}); seen != want {
		t.Errorf("server saw %v, want %v", seen, want)
	}

	caKey := filepath.Join(p.Dir, CAKeyFile)
	tests := []struct {
		name    string
		build   func() error
		wantErr string
	}{
		{"no allowed roles", func() error { _, err := ServerTLSConfig(srvCert, srvKey, p.CAFile); return err }, "no allowed client roles"},
		{"invalid allowed role", func() error { _, err := ServerTLSConfig(srvCert, srvKey, p.CAFile, "admin"); return err }, "invalid allowed role"},
		{"invalid server role", func() error { _, err := ClientTLSConfig(cliCert, cliKey, p.CAFile, ""); return err }, "invalid server role"},
		{"missing cert", func() error {
			_, err := ServerTLSConfig(srvCert+".missing", srvKey, p.CAFile, RoleController)
			return err
		}, "src.crt.missing"},
		{"mismatched key", func() error { _, err := ClientTLSConfig(cliCert, srvKey, p.CAFile, RoleSource); return err }, "load key pair"},
		{"ca as own cert", func() error { _, err := ServerTLSConfig(p.CAFile, caKey, p.CAFile, RoleController); return err }, "no ferry identity"},
		{"key as ca file", func() error { _, err := ClientTLSConfig(cliCert, cliKey, cliKey, RoleSource); return err }, "no pem certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.build()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// TestGRPC runs the standard health service behind ServerConfig and checks
// that PeerIdentity reports the caller and that refused callers never reach
// a handler.
func TestGRPC(t *testing.T) {
	p := NewTestPKI(t, "")
	seen := make(chan Identity, 10)
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(p.ServerTLS("src", RoleSource, RoleController))),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			id, err := PeerIdentity(ctx)
			if err != nil {
				return nil, status.Error(codes.Unauthenticated, err.Error())
			}
			seen <- id
			return handler(ctx, req)
		}),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	tests := []struct {
		name     string
		client   *tls.Config
		wantCode codes.Code
		wantPeer Identity
	}{
		{"controller", p.ClientTLS("ctl", RoleController, RoleSource), codes.OK, Identity{Name: "ctl", Role: RoleController}},
		{"wrong client role", p.ClientTLS("tgt", RoleTarget, RoleSource), codes.Unavailable, Identity{}},
		{"wrong server role", p.ClientTLS("ctl", RoleController, RoleTarget), codes.Unavailable, Identity{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tt.client)))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("Check: code %v (%v), want %v", got, err, tt.wantCode)
			}
			if tt.wantCode != codes.OK {
				if len(seen) != 0 {
					t.Errorf("refused caller reached the handler as %v", <-seen)
				}
				return
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health status = %v, want SERVING", resp.GetStatus())
			}
			if id := <-seen; id != tt.wantPeer {
				t.Errorf("PeerIdentity = %v, want %v", id, tt.wantPeer)
			}
		})
	}

	if _, err := PeerIdentity(context.Background()); err == nil || !strings.Contains(err.Error(), "no peer") {
		t.Errorf("PeerIdentity without a peer: err = %v", err)
	}
}
