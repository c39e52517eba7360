package catalog

// The Store methods below each run one Tx method in its own transaction.
// Use Update to change several records atomically.

// PutAgent stores an agent; see Tx.PutAgent.
func (s *Store) PutAgent(a Agent) error {
	return s.Update(func(tx *Tx) error { return tx.PutAgent(a) })
}

// GetAgent returns the agent of that name.
func (s *Store) GetAgent(name string) (a Agent, err error) {
	err = s.View(func(tx *Tx) error { a, err = tx.GetAgent(name); return err })
	return a, err
}

// ListAgents returns all agents by name.
func (s *Store) ListAgents() (as []Agent, err error) {
	err = s.View(func(tx *Tx) error { as, err = tx.ListAgents(); return err })
	return as, err
}

// DeleteAgent deletes the agent of that name.
func (s *Store) DeleteAgent(name string) error {
	return s.Update(func(tx *Tx) error { return tx.DeleteAgent(name) })
}

// PutJob stores a job and returns it as stored; see Tx.PutJob.
func (s *Store) PutJob(j Job) (out Job, err error) {
	err = s.Update(func(tx *Tx) error { out, err = tx.PutJob(j); return err })
	return out, err
}

// GetJob returns the job of that name.
func (s *Store) GetJob(name string) (j Job, err error) {
	err = s.View(func(tx *Tx) error { j, err = tx.GetJob(name); return err })
	return j, err
}

// ListJobs returns all jobs by name.
func (s *Store) ListJobs() (js []Job, err error) {
	err = s.View(func(tx *Tx) error { js, err = tx.ListJobs(); return err })
	return js, err
}

// DeleteJob deletes the job record only; see Tx.DeleteJob.
func (s *Store) DeleteJob(name string) error {
	return s.Update(func(tx *Tx) error { return tx.DeleteJob(name) })
}

// PutSession stores a session; see Tx.PutSession.
func (s *Store) PutSession(sess Session) error {
	return s.Update(func(tx *Tx) error { return tx.PutSession(sess) })
}

// GetSession returns the session of that ID.
func (s *Store) GetSession(id string) (sess Session, err error) {
	err = s.View(func(tx *Tx) error { sess, err = tx.GetSession(id); return err })
	return sess, err
}

// ListSessions returns a job's sessions, or all when jobUID is "", newest
// first.
func (s *Store) ListSessions(jobUID string) (ss []Session, err error) {
	err = s.View(func(tx *Tx) error { ss, err = tx.ListSessions(jobUID); return err })
	return ss, err
}

// PutPoint stores a restore point; see Tx.PutPoint.
func (s *Store) PutPoint(p Point) error {
	return s.Update(func(tx *Tx) error { return tx.PutPoint(p) })
}

// GetPoint returns the point of a job's file.
func (s *Store) GetPoint(jobUID string, fileID []byte) (p Point, err error) {
	err = s.View(func(tx *Tx) error { p, err = tx.GetPoint(jobUID, fileID); return err })
	return p, err
}

// ListPoints returns a job's points in chain and sequence order; see
// Tx.ListPoints.
func (s *Store) ListPoints(jobUID string) ([]Point, error) {
	all, err := s.ListAllPoints(jobUID)
	if err != nil {
		return nil, err
	}
	ps := all[:0]
	for _, p := range all {
		if len(p.MergedInto) == 0 {
			ps = append(ps, p)
		}
	}
	return ps, nil
}

// ListAllPoints is ListPoints with the points retention merged away, whose
// session secrets the points they were merged into still need.
func (s *Store) ListAllPoints(jobUID string) (ps []Point, err error) {
	err = s.View(func(tx *Tx) error { ps, err = tx.ListPoints(jobUID); return err })
	return ps, err
}

// PutKeyRecord stores a key record with its key material sealed; see
// Tx.PutKeyRecord.
func (s *Store) PutKeyRecord(rec KeyRecord, secret []byte) error {
	return s.Update(func(tx *Tx) error { return tx.PutKeyRecord(rec, secret) })
}

// GetKeyRecord returns a key record and its unsealed key material.
func (s *Store) GetKeyRecord(id string) (rec KeyRecord, secret Secret, err error) {
	err = s.View(func(tx *Tx) error { rec, secret, err = tx.GetKeyRecord(id); return err })
	return rec, secret, err
}

// ListKeyRecords returns key records without key material; see
// Tx.ListKeyRecords.
func (s *Store) ListKeyRecords(jobUID string) (rs []KeyRecord, err error) {
	err = s.View(func(tx *Tx) error { rs, err = tx.ListKeyRecords(jobUID); return err })
	return rs, err
}

// PutSessionSecret stores a file's session secret sealed; see
// Tx.PutSessionSecret.
func (s *Store) PutSessionSecret(jobUID string, sec SessionSecret) error {
	return s.Update(func(tx *Tx) error { return tx.PutSessionSecret(jobUID, sec) })
}

// GetSessionSecret returns a file's unsealed session secret.
func (s *Store) GetSessionSecret(jobUID string, fileID []byte) (sec SessionSecret, err error) {
	err = s.View(func(tx *Tx) error { sec, err = tx.GetSessionSecret(jobUID, fileID); return err })
	return sec, err
}

// ListSessionSecrets returns the unsealed session secrets of a job's files.
func (s *Store) ListSessionSecrets(jobUID string) (ss []SessionSecret, err error) {
	err = s.View(func(tx *Tx) error { ss, err = tx.ListSessionSecrets(jobUID); return err })
	return ss, err
}

// CommitSession stores a session, its point and its secret atomically; see
// Tx.CommitSession.
func (s *Store) CommitSession(sess Session, pt Point, secret SessionSecret) error {
	return s.Update(func(tx *Tx) error { return tx.CommitSession(sess, pt, secret) })
}

// DeletePoint forgets a point and its session secret; see Tx.DeletePoint.
func (s *Store) DeletePoint(jobUID string, fileID []byte) error {
	return s.Update(func(tx *Tx) error { return tx.DeletePoint(jobUID, fileID) })
}
