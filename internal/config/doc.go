// Package config is the HCL configuration of ferry's daemons: Agent for
// agent-source and agent-target, Controller for the controller.
//
// LoadAgent and LoadController read a file; ParseAgent and ParseController
// take its bytes and name. Each decodes with gohcl, which rejects any
// attribute or block the schema does not name, applies the defaults,
// resolves relative paths against the directory holding the file (so a
// daemon reads the same files whatever its working directory), and
// validates. Errors start with file:line,column; a validation error is a
// *FieldError that names the setting and says what it allows, and every
// problem in a file is reported at once.
//
// Settings written as strings with units (durations, sizes, rates) keep
// the string as written next to its parsed value, for example Bandwidth
// and BandwidthBytesPerSec. The examples in deploy/ are parsed by this
// package's tests, so they cannot rot.
package config
