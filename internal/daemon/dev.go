package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/ferrybackup/ferry/internal/config"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
)

// DevEnv is what `controller dev` runs.
type DevEnv struct {
	Dir        string
	Controller *Server
	Source     *Server
	Target     *Server
	CACert     string
	ClientCert string
	ClientKey  string
	stopOnce   sync.Once
}

// Exports are the lines to paste into a shell to use the dev controller.
func (e *DevEnv) Exports() string {
	return fmt.Sprintf("export FERRY_ADDR=%s\nexport FERRY_CACERT=%s\nexport FERRY_CLIENT_CERT=%s\nexport FERRY_CLIENT_KEY=%s\n",
		e.Controller.Addr, e.CACert, e.ClientCert, e.ClientKey)
}

// Stop stops the three daemons, controller first. It may be called again.
func (e *DevEnv) Stop() {
	e.stopOnce.Do(func() {
		e.Controller.Stop()
		e.Source.Stop()
		e.Target.Stop()
	})
}

// issueOnce issues a certificate unless it exists already.
func issueOnce(dir, name string, role pki.Role) (string, string, error) {
	cert, key := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if _, err := os.Stat(cert); err == nil {
		return cert, key, nil
	}
	return pki.Issue(dir, pki.IssueRequest{Name: name, Role: role})
}

// devLogLevel is FERRY_LOG_LEVEL, or info.
func devLogLevel() string {
	if l := os.Getenv("FERRY_LOG_LEVEL"); l != "" {
		return l
	}
	return "info"
}

// devLogFormat is FERRY_LOG_FORMAT ("text" or "json"), or text.
func devLogFormat() string {
	if f := os.Getenv("FERRY_LOG_FORMAT"); f != "" {
		return f
	}
	return "text"
}

// StartDev starts a controller, a source agent ("source", repository
// "local") and a target agent ("target", repository "local") on loopback,
// keeping the PKI, the controller's state and both repositories under dir
// (a new temporary directory when empty), and adds both agents to the
// controller. kdf overrides the Argon2id parameters (tests).
func StartDev(ctx context.Context, dir string, logOut io.Writer, kdf keys.KDFParams) (*DevEnv, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "ferry-dev-")
		if err != nil {
			return nil, err
		}
		dir = d
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	pkiDir := filepath.Join(dir, "pki")
	if _, err := os.Stat(filepath.Join(pkiDir, pki.CACertFile)); errors.Is(err, fs.ErrNotExist) {
		if err := pki.Init(pkiDir); err != nil {
			return nil, err
		}
	}
	files := map[string][2]string{}
	for name, role := range map[string]pki.Role{"controller": pki.RoleController, "source": pki.RoleSource, "target": pki.RoleTarget, "client": pki.RoleClient} {
		c, k, err := issueOnce(pkiDir, name, role)
		if err != nil {
			return nil, err
		}
		files[name] = [2]string{c, k}
	}
	ca := filepath.Join(pkiDir, pki.CACertFile)
	tlsOf := func(name string) *config.TLS {
		return &config.TLS{CertFile: files[name][0], KeyFile: files[name][1], CAFile: ca}
	}
	agentCfg := func(name, role string) (*config.Agent, error) {
		a := &config.Agent{
			Name: name, Role: role, Listen: "127.0.0.1:0", StateDir: filepath.Join(dir, name, "state"),
			LogLevel: devLogLevel(), LogFormat: devLogFormat(), TLS: tlsOf(name), Telemetry: &config.Telemetry{Listen: "127.0.0.1:0"},
			Repositories: []config.Repository{{Name: "local", Path: filepath.Join(dir, name, "repos", "local")}},
		}
		if role == config.RoleTarget {
			// So that WAN-mode copy jobs (--wan) dedupe in the dev setup too.
			a.WANCache = &config.WANCache{Path: filepath.Join(dir, name, "wancache"), Size: "1GiB"}
		}
		a.ApplyDefaults()
		return a, a.Validate()
	}
	env := &DevEnv{Dir: dir, CACert: ca, ClientCert: files["client"][0], ClientKey: files["client"][1]}
	scfg, err := agentCfg("source", config.RoleSource)
	if err != nil {
		return nil, err
	}
	if env.Source, err = StartAgent(scfg, logOut); err != nil {
		return nil, err
	}
	tcfg, err := agentCfg("target", config.RoleTarget)
	if err != nil {
		env.Source.Stop()
		return nil, err
	}
	if env.Target, err = StartAgent(tcfg, logOut); err != nil {
		env.Source.Stop()
		return nil, err
	}
	ccfg := &config.Controller{Listen: "127.0.0.1:0", StateDir: filepath.Join(dir, "controller"), LogLevel: devLogLevel(), LogFormat: devLogFormat(), TLS: tlsOf("controller"),
		Telemetry:         &config.Telemetry{Listen: "127.0.0.1:0"},
		RecoveryPublicKey: os.Getenv("FERRY_RECOVERY_PUBLIC_KEY")}
	ccfg.ApplyDefaults()
	if err := ccfg.Validate(); err != nil {
		env.Source.Stop()
		env.Target.Stop()
		return nil, err
	}
	srv, cs, err := StartController(ccfg, logOut, kdf)
	if err != nil {
		env.Source.Stop()
		env.Target.Stop()
		return nil, err
	}
	env.Controller = srv
	c := cs
	for _, a := range []struct{ name, addr, role string }{{"source", env.Source.Addr, "source"}, {"target", env.Target.Addr, "target"}} {
		if err := c.EnsureAgent(ctx, a.name, a.addr, a.role); err != nil {
			env.Stop()
			return nil, fmt.Errorf("add dev agent %s: %w", a.name, err)
		}
	}
	cs.Reconcile(ctx)
	return env, nil
}
