# ferry local demo: the source agent, named "source" (its certificate is
# pki/source.crt, identity ferry://source/source). Relative paths are resolved
# against this file's directory (deploy/demo/).

name   = "source"
role   = "source"
listen = "127.0.0.1:17701"

state_dir = "state/source"

log_level  = "debug"
log_format = "text"

tls {
  cert_file = "pki/source.crt"
  key_file  = "pki/source.key"
  ca_file   = "pki/ca.crt"
}

# The backups the demo copies live here.
repository "local" {
  path = "repos/source-local"
}
