// Package transittest is an in-process stand-in for HashiCorp Vault's
// Transit secrets engine, for tests that cannot run a real Vault (Vault
// itself does not build from the Go module proxy).
//
// It speaks the part of Vault's HTTP API that github.com/hashicorp/vault/api
// uses for Transit: keys (create, read, list, config, rotate, delete),
// encrypt, decrypt, rewrap, datakey and export, plus token auth (lookup-self,
// renew-self, revoke-self), AppRole login, sys/health and sys/seal-status.
// The key engine is Vault's own keysutil (MPL-2.0), so ciphertexts
// ("vault:v1:..."), key versions, rotation and min_decryption_version are
// Vault's; the HTTP layer, tokens and policies are re-implemented here and
// mimic Vault's status codes and error texts.
//
// Test switches that a real Vault lacks: Seal and Unseal at run time,
// per-endpoint request counts, and a policy for AppRole tokens.
package transittest
