// Package ratelimit caps the bandwidth of WAN copies. A Limiter is a token
// bucket on bytes; a copy session charges its bytes to its own job limiter
// and to the agent's global limiter (WaitAll), so each job keeps to its
// limit and all jobs together keep to the agent's. Writers, readers, conns
// and listeners wrap the I/O so the bytes that cross the link are the ones
// charged. Limits are parsed where they are configured (config.ParseRate).
package ratelimit
