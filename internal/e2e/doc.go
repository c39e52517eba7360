// Package e2e holds ferry's end-to-end tests: the real controller,
// agent-source and agent-target binaries started as separate processes on
// loopback with real mutual TLS, driven through the real CLI.
package e2e
