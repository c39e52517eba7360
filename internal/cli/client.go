package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/pki"
)

// The environment variables that say how to reach the controller. The flags
// of the same meaning (connFlags) override them.
const (
	EnvAddr       = "FERRY_ADDR"
	EnvCACert     = "FERRY_CACERT"
	EnvClientCert = "FERRY_CLIENT_CERT"
	EnvClientKey  = "FERRY_CLIENT_KEY"
)

// defaultTimeout bounds each short RPC; long ones (run --wait, restore,
// verify) have none and end on Ctrl-C instead.
const defaultTimeout = 30 * time.Second

// connFlags are the connection settings, in the order they are reported
// when missing.
var connFlags = []struct{ flag, env, usage string }{
	{"addr", EnvAddr, "controller address HOST:PORT"},
	{"ca-cert", EnvCACert, "CA certificate file (PEM) of the ferry PKI"},
	{"client-cert", EnvClientCert, "client certificate file (PEM), issued with --role client"},
	{"client-key", EnvClientKey, "key file (PEM) of the client certificate"},
}

// addConnFlags gives c and its subcommands the connection flags.
func addConnFlags(c *cobra.Command) {
	pf := c.PersistentFlags()
	for _, s := range connFlags {
		pf.String(s.flag, "", s.usage+" (default $"+s.env+")")
	}
	pf.Duration("timeout", defaultTimeout, "how long to wait for the controller's answer (run --wait, restore and verify wait as long as they take)")
}

// connSettings is where and how to dial the controller.
type connSettings struct {
	addr, caCert, clientCert, clientKey string
	timeout                             time.Duration
}

// connSettingsOf reads the connection flags of cmd, falling back to the
// environment. A missing setting is a usage error naming both.
func connSettingsOf(cmd *cobra.Command) (connSettings, error) {
	var vals []string
	var missing []string
	for _, s := range connFlags {
		v, _ := cmd.Flags().GetString(s.flag)
		if v == "" {
			v = os.Getenv(s.env)
		}
		if v == "" {
			missing = append(missing, fmt.Sprintf("set %s or pass --%s", s.env, s.flag))
		}
		vals = append(vals, v)
	}
	if len(missing) > 0 {
		return connSettings{}, usagef("no connection to the controller configured: %s", strings.Join(missing, "; "))
	}
	cs := connSettings{addr: vals[0], caCert: vals[1], clientCert: vals[2], clientKey: vals[3], timeout: defaultTimeout}
	if t, err := cmd.Flags().GetDuration("timeout"); err == nil {
		cs.timeout = t
	}
	if cs.timeout <= 0 {
		return connSettings{}, usagef("--timeout %v: must be positive", cs.timeout)
	}
	if host, port, err := net.SplitHostPort(cs.addr); err != nil || host == "" || port == "" {
		return connSettings{}, usagef("controller address %q (%s or --addr): want HOST:PORT, e.g. ctl.example.net:7400", cs.addr, EnvAddr)
	}
	return cs, nil
}

// newClient dials the controller named by cmd's connection flags or the
// FERRY_* environment with mutual TLS. Errors of calls made through the
// client are already worded for the user (see explainRPC). close releases
// the connection.
func newClient(cmd *cobra.Command) (controllerv1.ControllerServiceClient, func(), error) {
	cs, err := connSettingsOf(cmd)
	if err != nil {
		return nil, nil, err
	}
	conn, err := dialController(cs)
	if err != nil {
		return nil, nil, err
	}
	return controllerv1.NewControllerServiceClient(conn), func() { conn.Close() }, nil
}

func dialController(cs connSettings) (*grpc.ClientConn, error) {
	tc, err := pki.ClientTLSConfig(cs.clientCert, cs.clientKey, cs.caCert, pki.RoleController)
	if err != nil {
		return nil, fmt.Errorf("connect to the controller: %w", err)
	}
	ex := explainer{addr: cs.addr, timeout: cs.timeout}
	conn, err := grpc.NewClient(cs.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithChainUnaryInterceptor(ex.unary),
		grpc.WithChainStreamInterceptor(ex.stream),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to the controller at %s: %w", cs.addr, err)
	}
	return conn, nil
}

// callContext bounds a short RPC by --timeout.
func callContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	t, err := cmd.Flags().GetDuration("timeout")
	if err != nil || t <= 0 {
		t = defaultTimeout
	}
	return context.WithTimeout(cmd.Context(), t)
}

// controllerError is a gRPC error worded for the user. It keeps the status,
// so status.Code and status.FromError still see the original code.
type controllerError struct {
	msg string
	st  *status.Status
}

func (e *controllerError) Error() string              { return e.msg }
func (e *controllerError) GRPCStatus() *status.Status { return e.st }

// explainer turns the status errors of one connection into messages a user
// can act on: this is the one place the CLI interprets gRPC codes.
type explainer struct {
	addr    string
	timeout time.Duration
}

// explain words err. reached says whether the call got to the controller:
// an Unavailable that the controller itself returns (an agent it cannot
// reach) is its message, not "cannot reach the controller".
func (x explainer) explain(err error, reached bool) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	var ce *controllerError
	if errors.As(err, &ce) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var msg string
	switch st.Code() {
	case codes.Unavailable:
		if reached && !lostConnection(st.Message()) {
			msg = st.Message()
		} else if looksLikeTLS(st.Message()) {
			msg = fmt.Sprintf("cannot reach the controller at %s: %s (check %s, %s and %s: the CLI needs a certificate issued with --role client by the controller's CA)",
				x.addr, st.Message(), EnvCACert, EnvClientCert, EnvClientKey)
		} else {
			msg = fmt.Sprintf("cannot reach the controller at %s: %s (is `controller serve` running? check %s)", x.addr, st.Message(), EnvAddr)
		}
	case codes.NotFound, codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied,
		codes.AlreadyExists, codes.Unauthenticated, codes.OutOfRange, codes.Aborted, codes.ResourceExhausted:
		msg = st.Message()
	case codes.DeadlineExceeded:
		msg = fmt.Sprintf("the controller at %s did not answer within %v (raise --timeout): %s", x.addr, x.timeout, st.Message())
	case codes.Canceled:
		msg = "interrupted: " + st.Message()
	case codes.Unimplemented:
		msg = fmt.Sprintf("the controller at %s does not support this command: %s", x.addr, st.Message())
	default:
		msg = fmt.Sprintf("controller at %s: %s: %s", x.addr, st.Code(), st.Message())
	}
	return &controllerError{msg: msg, st: st}
}

// looksLikeTLS recognises handshake and certificate failures, which gRPC
// reports as Unavailable like a closed port.
func looksLikeTLS(msg string) bool {
	for _, s := range []string{"tls:", "x509:", "authentication handshake", "certificate"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// lostConnection recognises gRPC's own messages for a connection that
// broke during a call, as opposed to a status the controller sent.
func lostConnection(msg string) bool {
	for _, p := range []string{"connection error", "transport is closing", "error reading from server", "connection closed"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// The interceptors ask gRPC for the call's peer, which is set only once a
// call has a transport, to tell the two kinds of Unavailable apart.
func (x explainer) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	return x.explain(err, p.Addr != nil)
}

func (x explainer) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	p := new(peer.Peer)
	s, err := streamer(ctx, desc, cc, method, append(opts, grpc.Peer(p))...)
	if err != nil {
		return nil, x.explain(err, p.Addr != nil)
	}
	return explainedStream{ClientStream: s, x: x, peer: p}, nil
}

type explainedStream struct {
	grpc.ClientStream
	x    explainer
	peer *peer.Peer
}

func (s explainedStream) RecvMsg(m any) error {
	return s.x.explain(s.ClientStream.RecvMsg(m), s.peer.Addr != nil)
}

func (s explainedStream) SendMsg(m any) error {
	return s.x.explain(s.ClientStream.SendMsg(m), s.peer.Addr != nil)
}

// exactArgs requires one positional argument per name, and names them in
// the usage error.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usagef("%s takes %s, got %d argument(s) %q", cmd.CommandPath(), strings.Join(names, " "), len(args), args)
		}
		for i, a := range args {
			if a == "" {
				return usagef("%s: %s must not be empty", cmd.CommandPath(), names[i])
			}
		}
		return nil
	}
}

// addOutputFlag adds -o to a list or show command.
func addOutputFlag(c *cobra.Command, p *string) {
	c.Flags().StringVarP(p, "output", "o", "text", "text (aligned table) or json")
}

func checkOutput(o string) error {
	if o != "text" && o != "json" {
		return usagef("-o %q: choose text or json", o)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// pointIDLen is the length of a point (backup file) id in bytes.
const pointIDLen = 16

// parsePointID reads --point: a full point id (32 hex digits) or a prefix
// of one of an even number of hex digits, sent as the bytes it encodes. The
// server treats a point_id shorter than 16 bytes as a prefix and resolves it
// among the job's points (refusing an ambiguous one); an empty point_id
// means the latest point. An odd-length prefix is refused rather than cut
// short, so a typed prefix never silently matches more than it says.
func parsePointID(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > 2*pointIDLen {
		return nil, usagef("--point %q: a point id has %d hex digits", s, 2*pointIDLen)
	}
	if len(s)%2 != 0 {
		return nil, usagef("--point %q: give an even number of hex digits (a prefix is matched by whole bytes)", s)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, usagef("--point %q: not a hex point id or prefix", s)
	}
	return b, nil
}

// parseFrom reads a copy job's source, AGENT:REPO/BACKUPJOB. The last slash
// separates the job, so a repository may be a path.
func parseFrom(s string) (agent, repo, job string, err error) {
	agent, rest, ok := strings.Cut(s, ":")
	i := strings.LastIndex(rest, "/")
	if !ok || agent == "" || i <= 0 || i == len(rest)-1 {
		return "", "", "", usagef("--from %q: want AGENT:REPO/BACKUPJOB, the backup job's agent, repository and name, e.g. site-a:main/web", s)
	}
	return agent, rest[:i], rest[i+1:], nil
}

// parseAgentRef reads AGENT:WHAT (a repository or a path) of flag --name.
func parseAgentRef(flag, what, example, s string) (agent, rest string, err error) {
	agent, rest, ok := strings.Cut(s, ":")
	if !ok || agent == "" || rest == "" {
		return "", "", usagef("--%s %q: want AGENT:%s, e.g. %s", flag, s, what, example)
	}
	return agent, rest, nil
}
