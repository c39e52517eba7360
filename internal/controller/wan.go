package controller

import (
	"context"

	"github.com/ferrybackup/ferry/internal/catalog"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/keys"
)

// sessWAN is the mode of a copy session in WAN-accelerator mode.
const sessWAN = "wan"

// prepareWAN hands the target the session key of a WAN-mode session, with
// the session's grant, for that session only: in WAN mode the target
// seals the file and the source never gets the key.
func (s *Server) prepareWAN(ctx context.Context, tc targetv1.TargetServiceClient, tgt catalog.Agent, grantMsg, grantSig []byte, sess *keys.Session) error {
	rctx, cancel := context.WithTimeout(ctx, s.o.AgentTimeout)
	defer cancel()
	resp, err := tc.PrepareWanSession(rctx, &targetv1.PrepareWanSessionRequest{Grant: grantMsg, GrantSignature: grantSig, Key: protoKey(sess)})
	if err != nil {
		return agentErr(tgt, "take the key of a WAN session", err)
	}
	if !resp.Cache {
		s.log.Info("target agent has no wan_cache: WAN sessions to it dedupe only against the chain's previous point", "agent", tgt.Name)
	}
	return nil
}

// wanStats takes the WAN counters of an agent's report, nil when it has
// none (default mode, or progress before the end).
func wanStats(st *commonv1.SessionStats) *catalog.WANStats {
	w := &catalog.WANStats{
		WireBytesSent: st.WireBytesSent, WireBytesReceived: st.WireBytesReceived,
		DigestBytesSent: st.DigestBytesSent, BlockBytesSent: st.BlockBytesSent,
		Blocks: st.Blocks, PlainBytes: st.PlainBytes, BlocksSent: st.BlocksSent, BlockPlainBytesSent: st.BlockPlainBytesSent,
		CacheHitBlocks: st.CacheHitBlocks, CacheHitBytes: st.CacheHitBytes, BlocksRefetched: st.BlocksRefetched,
	}
	if *w == (catalog.WANStats{}) {
		return nil
	}
	return w
}

// fillWANStats puts a session's WAN counters into its stats.
func fillWANStats(st *commonv1.SessionStats, w *catalog.WANStats) {
	if w == nil {
		return
	}
	st.WireBytesSent, st.WireBytesReceived = w.WireBytesSent, w.WireBytesReceived
	st.DigestBytesSent, st.BlockBytesSent = w.DigestBytesSent, w.BlockBytesSent
	st.Blocks, st.PlainBytes, st.BlocksSent, st.BlockPlainBytesSent = w.Blocks, w.PlainBytes, w.BlocksSent, w.BlockPlainBytesSent
	st.CacheHitBlocks, st.CacheHitBytes, st.BlocksRefetched = w.CacheHitBlocks, w.CacheHitBytes, w.BlocksRefetched
}
