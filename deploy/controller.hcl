# ferry controller: /etc/ferry/controller.hcl on the administering host
# (here ctl.example.net), read by `controller serve`.
#
# Three hosts in this example:
#   ctl.example.net      the controller (this file)
#   branch-a.example.net agent-source, reads the branch's backups (agent-source.hcl)
#   offsite.example.net  agent-target, holds the encrypted copies (agent-target.hcl)
#
# Relative paths would be resolved against this file's directory; this file
# uses absolute ones.

# gRPC endpoint for the agents and the CLI. Open it to the agents and to the
# hosts you run the CLI from.
listen = "0.0.0.0:7700"

# The catalog (catalog.db) and the master key (master.key) that wraps every
# key the controller keeps. This is the one directory to back up; keep it
# owned by the ferry user, mode 0700.
state_dir = "/var/lib/ferry/controller"

log_level  = "info" # trace, debug, info, warn or error
log_format = "json" # text or json; json suits journald and log shippers

# How long a session grant stays valid. A target agent refuses a stream whose
# grant has expired.
grant_ttl = "1h"

# Certificates issued by the controller's CA (`controller pki ...`): this
# host's certificate (role controller) and key, and the CA certificate that
# every agent's certificate must chain to.
tls {
  cert_file = "/etc/ferry/controller.crt"
  key_file  = "/etc/ferry/controller.key" # mode 0600
  ca_file   = "/etc/ferry/ca.crt"
}

# Prometheus metrics (/metrics) and /healthz, over mutual TLS like every
# listener: scrape with a client certificate of this CA
# (controller pki issue --name prometheus --role client).
telemetry {
  listen = "127.0.0.1:9100"
}

# HashiCorp Vault Transit as the KMS of jobs encrypted in KMS mode. Only the
# controller talks to Vault. Uncomment to use; authenticate with either
# token_file or an approle block, not both.
# vault {
#   address   = "https://vault.example.net:8200"
#   mount     = "transit" # where the Transit engine is mounted
#   namespace = ""        # Vault Enterprise namespace, if any
#
#   token_file = "/etc/ferry/vault-token" # mode 0600
#   # approle {
#   #   role_id        = "ferry-controller"
#   #   secret_id_file = "/etc/ferry/vault-secret-id"
#   # }
#
#   ca_file = "/etc/ferry/vault-ca.crt" # empty: the system roots
#   # client_cert_file = "/etc/ferry/vault-client.crt"
#   # client_key_file  = "/etc/ferry/vault-client.key"
# }

# Optional recovery public key (standard base64). Every session secret is
# also sealed to it, so encrypted backups can still be restored with the
# matching private key, kept offline, if a password is lost.
# recovery_public_key = "..."
