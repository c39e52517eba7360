// Package agent implements the gRPC services of ferry's agents: the target
// agent (receiving copies, listing, verifying and restoring points of its
// repositories) and the source agent (copying restore points of its
// repositories to a target agent). Status codes are made here, at the
// boundary, from the domain errors of the packages below.
package agent
