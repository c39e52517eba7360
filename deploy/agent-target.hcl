# ferry target agent: /etc/ferry/agent.hcl on offsite.example.net, the site
# that holds the copies, read by the agent-target daemon.
#
# In the default mode it receives only ciphertext and never sees a key; it
# still verifies every copy and applies retention without keys.

# Must equal the name in this agent's certificate (ferry://target/offsite).
name = "offsite"
role = "target"

# gRPC endpoint that the controller and source agents dial.
listen = "0.0.0.0:7701"

# Durable progress of sessions, so an interrupted copy resumes. Never holds
# keys.
state_dir = "/var/lib/ferry/agent"

log_level  = "info" # trace, debug, info, warn or error
log_format = "json" # text or json

# Sessions this agent runs at once (1 to 64).
max_sessions = 8

# On SIGTERM, running sessions get this long to make what they received
# durable.
shutdown_timeout = "1m"

# Received data is fsynced and acknowledged every this many bytes; a session
# whose link drops resumes from there (1MiB to 1GiB, default 32MiB).
durability_interval = "32MiB"

tls {
  cert_file = "/etc/ferry/offsite.crt"
  key_file  = "/etc/ferry/offsite.key" # mode 0600
  ca_file   = "/etc/ferry/ca.crt"
}

# Where copies are committed. require_encryption refuses every job that would
# write plaintext here: this site is not trusted with readable data.
repository "copies" {
  path               = "/srv/ferry/copies"
  require_encryption = true
}

# Cap on the bytes this agent receives over the WAN; absent means unlimited.
bandwidth = "100Mbit"

# WAN mode: a global cache of blocks already at this site, so sources send
# only what it lacks. Put it on the same fast disk as the repository if you
# can. Without this block, WAN-mode copy jobs still run but dedupe only
# against the chain's previous point. The cache's key is wancache.key in
# state_dir; losing it only empties the cache.
wan_cache {
  path = "/var/cache/ferry/wan"
  size = "100GiB"
}

telemetry {
  listen = "127.0.0.1:9101"
}
