// Package daemon wires ferry's daemons from their configuration: the
// source and target agents and the controller, each a gRPC server with
// mutual TLS and the standard health service, logging through one hclog
// logger, stopping gracefully within a bound on SIGTERM. It also holds
// `controller dev`: all three in one process with a throw-away PKI.
package daemon
