// Package controller is ferry's controller daemon: the ControllerService
// the CLI calls, backed by the catalog. It owns every key: it makes each
// session's secret, wraps it under the job's secret key, hands the
// unwrapped secret to the one agent that must encrypt, for that session
// only, and signs the grant that lets the target accept the source's
// stream. Data never passes through it.
package controller
