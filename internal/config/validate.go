package config

import (
	"errors"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// LogLevels are the accepted values of log_level, most verbose first.
var LogLevels = []string{"trace", "debug", "info", "warn", "error"}

// LogFormats are the accepted values of log_format.
var LogFormats = []string{"text", "json"}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// checkListen checks a host:port to listen on. An empty host means every
// interface, and port 0 a port chosen by the system (for tests).
func checkListen(ps *problems, p fieldPath, v, example string) {
	if v == "" {
		ps.add(p, "required; set the host:port to listen on, e.g. %q", example)
		return
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		why := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			why = ae.Err
		}
		ps.add(p, "%q is not host:port (%s); use e.g. %q, or [::]:PORT for IPv6", v, why, example)
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		ps.add(p, "port %q in %q is not a number from 0 to 65535", port, v)
	}
	if host == "" {
		return
	}
	if _, err := netip.ParseAddr(host); err != nil && !hostnameRE.MatchString(host) {
		ps.add(p, "host %q in %q is neither an IP address nor a host name", host, v)
	}
}

// checkOneOf checks that v is one of allowed.
func checkOneOf(ps *problems, p fieldPath, v string, allowed []string) {
	if !slices.Contains(allowed, v) {
		ps.add(p, "%q is not allowed; use one of %s", v, quoteList(allowed))
	}
}

func quoteList(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// required reports an empty setting, saying what it is for.
func required(ps *problems, p fieldPath, v, what string) bool {
	if v == "" {
		ps.add(p, "required; set it to %s", what)
		return false
	}
	return true
}

// TLS is the certificate a daemon presents and the CA it trusts, all PEM
// files issued by the controller's CA (`controller pki ...`). Connections
// in both directions are mutual TLS 1.3.
type TLS struct {
	// CertFile is the daemon's certificate (required). Its identity
	// (ferry://<role>/<name>) must match the daemon's role and name.
	CertFile string `hcl:"cert_file,optional"`
	// KeyFile is the private key of CertFile (required); keep it 0600.
	KeyFile string `hcl:"key_file,optional"`
	// CAFile is the controller's CA certificate, ca.crt (required); peers
	// must present certificates it signed.
	CAFile string `hcl:"ca_file,optional"`
}

func (t *TLS) validate(ps *problems, p fieldPath) {
	if t == nil {
		ps.add(p, `required block is missing; add tls { cert_file = "...", key_file = "...", ca_file = "..." }`)
		return
	}
	required(ps, p.attr("cert_file"), t.CertFile, "the PEM certificate file issued by the controller's CA")
	required(ps, p.attr("key_file"), t.KeyFile, "the PEM private key file of cert_file")
	required(ps, p.attr("ca_file"), t.CAFile, "the controller's CA certificate file (ca.crt)")
}

func (t *TLS) resolve(dir string) {
	if t != nil {
		resolve(dir, &t.CertFile, &t.KeyFile, &t.CAFile)
	}
}

// Telemetry is where a daemon serves its Prometheus metrics (/metrics)
// and /healthz, over mutual TLS like every ferry listener: the scraper
// presents a certificate of the client role from the deployment's CA
// (`controller pki issue --role client`).
type Telemetry struct {
	// Listen is the host:port of the metrics endpoint (required in the
	// block).
	Listen string `hcl:"listen,optional"`
}

func (t *Telemetry) validate(ps *problems, p fieldPath, example string) {
	if t != nil {
		checkListen(ps, p.attr("listen"), t.Listen, example)
	}
}
