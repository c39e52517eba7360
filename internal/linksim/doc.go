// Package linksim simulates a WAN link in user space, for tests and
// benchmarks on machines without netem: a TCP proxy on the loopback that
// forwards to a target and, in each direction, limits the bandwidth, delays
// every byte by a one-way latency without limiting how many are in flight
// (so a link keeps its rate whatever its bandwidth-delay product), and cuts
// connections at given byte offsets or on demand.
package linksim
