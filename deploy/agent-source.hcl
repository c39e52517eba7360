# ferry source agent: /etc/ferry/agent.hcl on branch-a.example.net, the site
# whose backups are copied, read by the agent-source daemon.
#
# It reads restore points from its repositories and, by default, encrypts
# their blocks before they leave the site.

# Must equal the name in this agent's certificate (ferry://source/branch-a).
name = "branch-a"
role = "source"

# gRPC endpoint the controller dials. Open it to the controller only.
listen = "0.0.0.0:7701"

# Durable progress of sessions, so an interrupted copy resumes instead of
# starting over. Never holds keys.
state_dir = "/var/lib/ferry/agent"

log_level  = "info" # trace, debug, info, warn or error
log_format = "json" # text or json

# Sessions this agent runs at once (1 to 64).
max_sessions = 4

# On SIGTERM, running sessions get this long to reach a resumable point.
shutdown_timeout = "30s"

# This agent's certificate and key from the controller's CA, and the CA
# certificate (ca.crt) that the controller and the other agents chain to.
tls {
  cert_file = "/etc/ferry/branch-a.crt"
  key_file  = "/etc/ferry/branch-a.key" # mode 0600
  ca_file   = "/etc/ferry/ca.crt"
}

# The repositories whose backups copy jobs read (and where this agent's own
# backup jobs write). Jobs refer to them by their label.
repository "local" {
  path = "/srv/ferry/local"
}

# Cap on the bytes this agent sends over the WAN: "50Mbit", "10MB/s",
# "512KiB/s" or bytes per second; 0 or absent means unlimited.
bandwidth = "50Mbit"

# Prometheus metrics (/metrics) and /healthz, over mutual TLS like every
# listener: scrape with a client certificate of this CA
# (controller pki issue --name prometheus --role client).
telemetry {
  listen = "127.0.0.1:9101"
}
