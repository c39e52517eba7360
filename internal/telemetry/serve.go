package telemetry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics from reg and /healthz.
func Handler(reg prometheus.Gatherer, logger hclog.Logger) http.Handler {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}),
		ErrorHandling:     promhttp.ContinueOnError,
		Timeout:           30 * time.Second,
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// Serve serves Handler(reg) on listen (for example "127.0.0.1:0") over mutual TLS and returns
// the bound address. Every ferry listener is mTLS: tlsConf must have a certificate and
// ClientAuth tls.RequireAndVerifyClientCert. The server runs until stop is called, which
// drains requests within its context's deadline, or until ctx is done, which closes it at
// once. logger may be nil.
func Serve(ctx context.Context, listen string, tlsConf *tls.Config, reg prometheus.Gatherer, logger hclog.Logger) (addr string, stop func(context.Context) error, err error) {
	if tlsConf == nil {
		return "", nil, fmt.Errorf("metrics listener %s: no TLS config; every ferry listener is mutual TLS", listen)
	}
	if tlsConf.ClientAuth != tls.RequireAndVerifyClientCert {
		return "", nil, fmt.Errorf("metrics listener %s: TLS config does not require and verify client certificates; every ferry listener is mutual TLS", listen)
	}
	if len(tlsConf.Certificates) == 0 && tlsConf.GetCertificate == nil && tlsConf.GetConfigForClient == nil {
		return "", nil, fmt.Errorf("metrics listener %s: TLS config has no server certificate", listen)
	}
	if reg == nil {
		return "", nil, fmt.Errorf("metrics listener %s: no registry", listen)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	logger = logger.Named("metrics")

	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", listen)
	if err != nil {
		return "", nil, fmt.Errorf("metrics listener %s: %w", listen, err)
	}
	conf := tlsConf.Clone()
	if conf.MinVersion < tls.VersionTLS12 {
		conf.MinVersion = tls.VersionTLS12
	}
	srv := &http.Server{
		Handler:           Handler(reg, logger),
		TLSConfig:         conf,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	var serveErr error
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.ServeTLS(l, "", ""); !errors.Is(err, http.ErrServerClosed) {
			serveErr = err
		}
	}()
	unwatch := context.AfterFunc(ctx, func() { _ = srv.Close() })
	addr = l.Addr().String()
	logger.Info("serving metrics", "address", addr)

	stop = func(sctx context.Context) error {
		unwatch()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
			return fmt.Errorf("stop metrics listener %s: %w", addr, err)
		}
		<-served
		if serveErr != nil {
			return fmt.Errorf("metrics listener %s: %w", addr, serveErr)
		}
		return nil
	}
	return addr, stop, nil
}
