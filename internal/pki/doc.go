// Package pki is the controller's certificate authority and the mutual
// TLS 1.3 policy shared by the controller and the agents.
//
// A CA lives in a directory (ca.crt, ca.key) created by Init; Issue signs
// per-component certificates whose role (controller, source, target,
// client) is carried in a single URI SAN of the form ferry://<role>/<name>.
// ServerTLSConfig and ClientTLSConfig build configurations that verify the
// peer against the CA and refuse peers of the wrong role during the
// handshake; PeerIdentity reads the verified identity in a gRPC handler.
package pki
