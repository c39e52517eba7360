package controller

import (
	"context"

	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
)

// SeedWanCache warms a target agent's WAN cache from a point of a copy
// job's chain on that target (default: the latest). For an encrypted job
// the target gets the job's session keys for this call only, as for a
// restore: it must read the plaintext blocks to cache them (the cache is
// encrypted at rest under the agent's own key).
func (s *Server) SeedWanCache(ctx context.Context, req *controllerv1.SeedWanCacheRequest) (*controllerv1.SeedWanCacheResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	j, err := s.job(req.Job)
	if err != nil {
		return nil, toStatus(err)
	}
	if j.Kind != kindCopy || j.ToAgent != req.Target {
		return nil, toStatus(invalidf("job %s does not copy to target agent %s: seed a target's cache from a copy job whose files it holds", j.Name, req.Target))
	}
	tgt, err := s.agent(req.Target, "target")
	if err != nil {
		return nil, toStatus(err)
	}
	p, err := s.findPoint(j, req.PointId) // the latest without an id
	if err != nil {
		return nil, toStatus(err)
	}
	var ks []*commonv1.SessionKey
	if j.Encryption != encNone {
		if ks, err = s.secretsOf(ctx, j.UID, nil); err != nil {
			return nil, toStatus(err)
		}
	}
	tc, err := s.targetClient(tgt)
	if err != nil {
		return nil, toStatus(err)
	}
	r, err := tc.SeedWanCache(ctx, &targetv1.SeedWanCacheRequest{Repository: j.ToRepository, Backup: j.Name, PointId: p.FileID, Keys: ks})
	if err != nil {
		return nil, toStatus(agentErr(tgt, "seed its WAN cache", err))
	}
	s.log.Info("seeded a target's WAN cache", "job", j.Name, "target", tgt.Name, "blocks", r.Blocks, "added", r.Added, "already", r.Already)
	return &controllerv1.SeedWanCacheResponse{PointId: r.PointId, Blocks: r.Blocks, Already: r.Already, Added: r.Added,
		AddedBytes: r.AddedBytes, DurationNanos: r.DurationNanos}, nil
}
