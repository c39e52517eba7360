// Package telemetry holds the Prometheus metrics of a ferry daemon: a registry of its own per
// daemon (so several daemons in one process do not collide), typed helpers that record
// sessions, bytes, WAN cache and Vault activity, and an mTLS-only HTTP endpoint that serves
// them. A nil *Metrics records nothing, so code without telemetry needs no checks.
package telemetry
