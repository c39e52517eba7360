# ferry local demo: the target agent, named "target" (its certificate is
# pki/target.crt, identity ferry://target/target). Relative paths are resolved
# against this file's directory (deploy/demo/).

name   = "target"
role   = "target"
listen = "127.0.0.1:17702"

state_dir = "state/target"

log_level  = "debug"
log_format = "text"

tls {
  cert_file = "pki/target.crt"
  key_file  = "pki/target.key"
  ca_file   = "pki/ca.crt"
}

# Copies land here, encrypted: a job that would write plaintext is refused.
repository "local" {
  path               = "repos/target-local"
  require_encryption = true
}

# WAN mode's block cache, for trying copy jobs in WAN mode.
wan_cache {
  path = "cache/target-wan"
  size = "1GiB"
}
