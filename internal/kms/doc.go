// Package kms wraps and unwraps session secrets with HashiCorp Vault's
// Transit engine, through github.com/hashicorp/vault/api. Only the
// controller uses it. Every call is one Vault request for a whole batch,
// retried a bounded number of times with backoff when Vault is unreachable
// or sealed, and errors name Vault, the key and what to do.
package kms
