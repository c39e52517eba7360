# ferry local demo: the controller. The three demo daemons run on one machine
# on 127.0.0.1 (controller 17700, source agent 17701, target agent 17702).
#
# Relative paths are resolved against this file's directory (deploy/demo/),
# not the working directory, so the daemons can be started from anywhere.
# pki/ holds the demo CA and certificates (`controller pki ...`), state/ the
# daemons' state, repos/ the repositories and cache/ the target's WAN cache;
# all of them are throw-away.

listen    = "127.0.0.1:17700"
state_dir = "state/controller"

log_level  = "debug"
log_format = "text"

grant_ttl = "1h"

tls {
  cert_file = "pki/controller.crt"
  key_file  = "pki/controller.key"
  ca_file   = "pki/ca.crt"
}
