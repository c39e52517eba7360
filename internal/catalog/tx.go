package catalog

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Tx is a catalog transaction, valid only inside the function passed to
// Store.Update or Store.View. Writes in an Update commit together when the
// function returns nil and not at all when it returns an error.
type Tx struct {
	tx   *bolt.Tx
	seal *sealer
	now  time.Time
}

// Update runs fn in a read-write transaction. Only one runs at a time.
func (s *Store) Update(fn func(*Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return fn(&Tx{tx: tx, seal: s.seal, now: time.Now().UTC().Round(0)})
	})
}

// View runs fn in a read-only transaction; writes in it fail.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return fn(&Tx{tx: tx, seal: s.seal, now: time.Now().UTC().Round(0)})
	})
}

// NewID returns a random 128-bit id in hex, for job UIDs, session ids and
// key record ids.
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func notFound(kind, key string) error {
	return fmt.Errorf("%s %q %w", kind, key, ErrNotFound)
}

func (t *Tx) bucket(name string) *bolt.Bucket { return t.tx.Bucket([]byte(name)) }

func (t *Tx) getJSON(bucket string, key []byte, v any) (bool, error) {
	raw := t.bucket(bucket).Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("decode %s record %q: %w", bucket, key, err)
	}
	return true, nil
}

func (t *Tx) putJSON(bucket string, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s record %q: %w", bucket, key, err)
	}
	return t.bucket(bucket).Put(key, raw)
}

func listJSON[T any](t *Tx, bucket string, prefix []byte) ([]T, error) {
	var out []T
	c := t.bucket(bucket).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var r T
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("decode %s record %q: %w", bucket, k, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// checkUID refuses job UIDs that would make composite keys ambiguous.
func checkUID(uid string) error {
	if uid == "" {
		return errors.New("job uid is empty")
	}
	if strings.IndexByte(uid, 0) >= 0 {
		return fmt.Errorf("job uid %q contains a NUL byte", uid)
	}
	return nil
}

// jobKey is the prefix of a job's records in the points, session secrets and
// session index buckets: the UID and a NUL, which no UID contains.
func jobKey(uid string, rest ...[]byte) []byte {
	k := append([]byte(uid), 0)
	for _, r := range rest {
		k = append(k, r...)
	}
	return k
}

// ---- agents ----

// PutAgent stores an agent, replacing one of the same name. A zero AddedAt
// keeps the stored agent's, or is set to now.
func (t *Tx) PutAgent(a Agent) error {
	if a.Name == "" {
		return errors.New("put agent: name is empty")
	}
	if a.AddedAt.IsZero() {
		var old Agent
		found, err := t.getJSON(bucketAgents, []byte(a.Name), &old)
		if err != nil {
			return err
		}
		a.AddedAt = t.now
		if found {
			a.AddedAt = old.AddedAt
		}
	}
	return t.putJSON(bucketAgents, []byte(a.Name), a)
}

// GetAgent returns the agent of that name.
func (t *Tx) GetAgent(name string) (Agent, error) {
	var a Agent
	found, err := t.getJSON(bucketAgents, []byte(name), &a)
	if err == nil && !found {
		err = notFound("agent", name)
	}
	return a, err
}

// ListAgents returns all agents by name.
func (t *Tx) ListAgents() ([]Agent, error) { return listJSON[Agent](t, bucketAgents, nil) }

// DeleteAgent deletes the agent of that name.
func (t *Tx) DeleteAgent(name string) error {
	return t.delete(bucketAgents, "agent", name)
}

func (t *Tx) delete(bucket, kind, name string) error {
	b := t.bucket(bucket)
	if b.Get([]byte(name)) == nil {
		return notFound(kind, name)
	}
	return b.Delete([]byte(name))
}

// ---- jobs ----

// PutJob stores a job, replacing one of the same name, and returns it as
// stored. The first put of a name gives the job a new random UID; later puts
// keep it (an empty UID means "the stored job's"). A UID that differs from
// the stored job's is refused with ErrExists: it belongs to another job.
// CreatedAt is kept from the stored job (or set to now if zero on the first
// put) and UpdatedAt is set to now.
func (t *Tx) PutJob(j Job) (Job, error) {
	if j.Name == "" {
		return Job{}, errors.New("put job: name is empty")
	}
	var old Job
	found, err := t.getJSON(bucketJobs, []byte(j.Name), &old)
	if err != nil {
		return Job{}, err
	}
	switch {
	case found && j.UID == "":
		j.UID = old.UID
	case found && j.UID != old.UID:
		return Job{}, fmt.Errorf("put job %q with uid %s: %w: the stored job of that name has uid %s", j.Name, j.UID, ErrExists, old.UID)
	case j.UID == "":
		j.UID = NewID()
	}
	if err := checkUID(j.UID); err != nil {
		return Job{}, fmt.Errorf("put job %q: %w", j.Name, err)
	}
	switch {
	case found:
		j.CreatedAt = old.CreatedAt
	case j.CreatedAt.IsZero():
		j.CreatedAt = t.now
	}
	j.UpdatedAt = t.now
	return j, t.putJSON(bucketJobs, []byte(j.Name), j)
}

// GetJob returns the job of that name.
func (t *Tx) GetJob(name string) (Job, error) {
	var j Job
	found, err := t.getJSON(bucketJobs, []byte(name), &j)
	if err == nil && !found {
		err = notFound("job", name)
	}
	return j, err
}

// ListJobs returns all jobs by name.
func (t *Tx) ListJobs() ([]Job, error) { return listJSON[Job](t, bucketJobs, nil) }

// DeleteJob deletes the job record only. Its points, sessions, key records
// and session secrets stay, under the job's UID, so its restore points can
// still be listed and restored; a new job of the same name gets a new UID
// and sees none of them.
func (t *Tx) DeleteJob(name string) error {
	return t.delete(bucketJobs, "job", name)
}

// ---- sessions ----

// sessionTime encodes t so byte order is time order (sign bit flipped).
func sessionTime(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())^(1<<63))
}

// PutSession stores a session, replacing one of the same ID. ID, JobUID and
// StartedAt are required; a stored session cannot move to another job.
func (t *Tx) PutSession(s Session) error {
	if s.ID == "" {
		return errors.New("put session: id is empty")
	}
	if err := checkUID(s.JobUID); err != nil {
		return fmt.Errorf("put session %q: %w", s.ID, err)
	}
	if y := s.StartedAt.Year(); s.StartedAt.IsZero() || y < 1700 || y > 2200 {
		return fmt.Errorf("put session %q: start time %v is unset or out of range", s.ID, s.StartedAt)
	}
	id := []byte(s.ID)
	var old Session
	found, err := t.getJSON(bucketSessions, id, &old)
	if err != nil {
		return err
	}
	if found {
		if old.JobUID != s.JobUID {
			return fmt.Errorf("put session %q: it belongs to job uid %s, not %s", s.ID, old.JobUID, s.JobUID)
		}
		if err := t.bucket(bucketSessionsByJob).Delete(jobKey(old.JobUID, sessionTime(old.StartedAt), id)); err != nil {
			return err
		}
		if err := t.bucket(bucketSessionsByTime).Delete(append(sessionTime(old.StartedAt), id...)); err != nil {
			return err
		}
	}
	if err := t.bucket(bucketSessionsByJob).Put(jobKey(s.JobUID, sessionTime(s.StartedAt), id), nil); err != nil {
		return err
	}
	if err := t.bucket(bucketSessionsByTime).Put(append(sessionTime(s.StartedAt), id...), nil); err != nil {
		return err
	}
	return t.putJSON(bucketSessions, id, s)
}

// GetSession returns the session of that ID.
func (t *Tx) GetSession(id string) (Session, error) {
	var s Session
	found, err := t.getJSON(bucketSessions, []byte(id), &s)
	if err == nil && !found {
		err = notFound("session", id)
	}
	return s, err
}

// ListSessions returns the sessions of the job with that UID, or of all jobs
// when jobUID is "", newest (latest StartedAt) first.
func (t *Tx) ListSessions(jobUID string) ([]Session, error) {
	index, prefix := bucketSessionsByTime, []byte(nil)
	if jobUID != "" {
		if err := checkUID(jobUID); err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		index, prefix = bucketSessionsByJob, jobKey(jobUID)
	}
	c := t.bucket(index).Cursor()
	var k []byte
	if end := prefixEnd(prefix); end == nil {
		k, _ = c.Last()
	} else if k, _ = c.Seek(end); k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	var out []Session
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
		id := k[len(prefix)+8:]
		s, err := t.GetSession(string(id))
		if err != nil {
			return nil, fmt.Errorf("list sessions: index %s names a missing session: %w", index, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// prefixEnd returns the smallest key greater than every key with prefix, or
// nil when there is none (an empty or all-0xff prefix).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// ---- points ----

// PutPoint stores a restore point under its job UID and file id, replacing
// one with the same pair.
func (t *Tx) PutPoint(p Point) error {
	if err := checkUID(p.JobUID); err != nil {
		return fmt.Errorf("put point %x: %w", p.FileID, err)
	}
	if len(p.FileID) == 0 {
		return fmt.Errorf("put point of job %s: file id is empty", p.JobUID)
	}
	return t.putJSON(bucketPoints, jobKey(p.JobUID, p.FileID), p)
}

// GetPoint returns the point of a job's file.
func (t *Tx) GetPoint(jobUID string, fileID []byte) (Point, error) {
	var p Point
	found, err := t.getJSON(bucketPoints, jobKey(jobUID, fileID), &p)
	if err == nil && !found {
		err = notFound("point", fmt.Sprintf("%s/%x", jobUID, fileID))
	}
	return p, err
}

// ListPoints returns the points of the job with that UID, chain by chain
// (chains in the order of their first point's creation), and within a chain
// by sequence number.
func (t *Tx) ListPoints(jobUID string) ([]Point, error) {
	if err := checkUID(jobUID); err != nil {
		return nil, fmt.Errorf("list points: %w", err)
	}
	pts, err := listJSON[Point](t, bucketPoints, jobKey(jobUID))
	if err != nil {
		return nil, err
	}
	chainStart := map[string]time.Time{}
	for _, p := range pts {
		if st, ok := chainStart[string(p.ChainID)]; !ok || p.Created.Before(st) {
			chainStart[string(p.ChainID)] = p.Created
		}
	}
	slices.SortFunc(pts, func(a, b Point) int {
		return cmp.Or(
			chainStart[string(a.ChainID)].Compare(chainStart[string(b.ChainID)]),
			bytes.Compare(a.ChainID, b.ChainID),
			cmp.Compare(a.Sequence, b.Sequence),
			a.Created.Compare(b.Created),
			bytes.Compare(a.FileID, b.FileID),
		)
	})
	return pts, nil
}

// ---- key records ----

type storedKeyRecord struct {
	KeyRecord
	Sealed []byte `json:"sealed_secret"`
}

func keyRecordName(id string) string { return fmt.Sprintf("key record %q", id) }

// PutKeyRecord stores a key record with its key material sealed. Key records
// never change: putting an identical record again does nothing, and a
// different one under a stored ID is refused with ErrExists.
func (t *Tx) PutKeyRecord(rec KeyRecord, secret []byte) error {
	if rec.ID == "" {
		return errors.New("put key record: id is empty")
	}
	id := []byte(rec.ID)
	var old storedKeyRecord
	found, err := t.getJSON(bucketKeyRecords, id, &old)
	if err != nil {
		return err
	}
	if found {
		oldSecret, err := t.openKeyRecord(rec.ID, old)
		if err != nil {
			return err
		}
		same := subtle.ConstantTimeCompare(oldSecret, secret) == 1 && sameJSON(old.KeyRecord, rec)
		clear(oldSecret)
		if same {
			return nil
		}
		return fmt.Errorf("put %s: %w", keyRecordName(rec.ID), ErrExists)
	}
	return t.putJSON(bucketKeyRecords, id, storedKeyRecord{
		KeyRecord: rec,
		Sealed:    t.seal.seal(bucketKeyRecords, id, secret),
	})
}

func sameJSON(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// openKeyRecord opens the key material of the record stored under id; the
// associated data is the bucket key, not the ID inside the value, so a whole
// value copied to another ID does not open either.
func (t *Tx) openKeyRecord(id string, s storedKeyRecord) (Secret, error) {
	pt, err := t.seal.open(bucketKeyRecords, []byte(id), s.Sealed)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", keyRecordName(id), err)
	}
	return pt, nil
}

// GetKeyRecord returns a key record and its unsealed key material.
func (t *Tx) GetKeyRecord(id string) (KeyRecord, Secret, error) {
	var s storedKeyRecord
	found, err := t.getJSON(bucketKeyRecords, []byte(id), &s)
	if err != nil {
		return KeyRecord{}, nil, err
	}
	if !found {
		return KeyRecord{}, nil, notFound("key record", id)
	}
	secret, err := t.openKeyRecord(id, s)
	if err != nil {
		return KeyRecord{}, nil, err
	}
	if s.ID != id {
		clear(secret)
		return KeyRecord{}, nil, fmt.Errorf("open %s: stored record names id %q", keyRecordName(id), s.ID)
	}
	return s.KeyRecord, secret, nil
}

// ListKeyRecords returns the key records (without key material) of the job
// with that UID, or of all jobs when jobUID is "", by ID.
func (t *Tx) ListKeyRecords(jobUID string) ([]KeyRecord, error) {
	all, err := listJSON[storedKeyRecord](t, bucketKeyRecords, nil)
	if err != nil {
		return nil, err
	}
	var out []KeyRecord
	for _, s := range all {
		if jobUID == "" || s.JobUID == jobUID {
			out = append(out, s.KeyRecord)
		}
	}
	return out, nil
}

// ---- session secrets ----

func sessionSecretName(jobUID string, fileID []byte) string {
	return fmt.Sprintf("session secret of job %s file %x", jobUID, fileID)
}

// encodeSessionSecret lays out the sealed plaintext: uvarint key id length,
// key id, secret.
func encodeSessionSecret(s SessionSecret) []byte {
	b := binary.AppendUvarint(nil, uint64(len(s.KeyID)))
	b = append(b, s.KeyID...)
	return append(b, s.Secret...)
}

func decodeSessionSecret(fileID, b []byte) (SessionSecret, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return SessionSecret{}, errors.New("malformed sealed session secret")
	}
	return SessionSecret{
		FileID: bytes.Clone(fileID),
		KeyID:  bytes.Clone(b[w : w+int(n)]),
		Secret: bytes.Clone(b[w+int(n):]),
	}, nil
}

// PutSessionSecret stores, sealed, the session secret of one file of the job
// with that UID. A file's secret never changes: putting the same one again
// (a retried commit, or a commit after a put when the session started) does
// nothing, and a different one is refused with ErrExists.
func (t *Tx) PutSessionSecret(jobUID string, s SessionSecret) error {
	if err := checkUID(jobUID); err != nil {
		return fmt.Errorf("put session secret of file %x: %w", s.FileID, err)
	}
	if len(s.FileID) == 0 {
		return fmt.Errorf("put session secret of job %s: file id is empty", jobUID)
	}
	if len(s.Secret) == 0 {
		return fmt.Errorf("put %s: secret is empty", sessionSecretName(jobUID, s.FileID))
	}
	key := jobKey(jobUID, s.FileID)
	if raw := t.bucket(bucketSessionSecrets).Get(key); raw != nil {
		old, err := t.openSessionSecret(jobUID, s.FileID, key, raw)
		if err != nil {
			return fmt.Errorf("put %s: %w", sessionSecretName(jobUID, s.FileID), err)
		}
		same := bytes.Equal(old.KeyID, s.KeyID) && subtle.ConstantTimeCompare(old.Secret, s.Secret) == 1
		clear(old.Secret)
		if same {
			return nil
		}
		return fmt.Errorf("put %s: %w", sessionSecretName(jobUID, s.FileID), ErrExists)
	}
	pt := encodeSessionSecret(s)
	sealed := t.seal.seal(bucketSessionSecrets, key, pt)
	clear(pt)
	return t.bucket(bucketSessionSecrets).Put(key, sealed)
}

func (t *Tx) openSessionSecret(jobUID string, fileID, key, raw []byte) (SessionSecret, error) {
	pt, err := t.seal.open(bucketSessionSecrets, key, raw)
	if err != nil {
		return SessionSecret{}, fmt.Errorf("open %s: %w", sessionSecretName(jobUID, fileID), err)
	}
	s, err := decodeSessionSecret(fileID, pt)
	clear(pt)
	if err != nil {
		return SessionSecret{}, fmt.Errorf("open %s: %w", sessionSecretName(jobUID, fileID), err)
	}
	return s, nil
}

// GetSessionSecret returns the unsealed session secret of one file of the
// job with that UID.
func (t *Tx) GetSessionSecret(jobUID string, fileID []byte) (SessionSecret, error) {
	if err := checkUID(jobUID); err != nil {
		return SessionSecret{}, fmt.Errorf("get session secret of file %x: %w", fileID, err)
	}
	key := jobKey(jobUID, fileID)
	raw := t.bucket(bucketSessionSecrets).Get(key)
	if raw == nil {
		return SessionSecret{}, fmt.Errorf("%s %w", sessionSecretName(jobUID, fileID), ErrNotFound)
	}
	return t.openSessionSecret(jobUID, fileID, key, raw)
}

// ListSessionSecrets returns the unsealed session secrets of all files of
// the job with that UID, by file id.
func (t *Tx) ListSessionSecrets(jobUID string) ([]SessionSecret, error) {
	if err := checkUID(jobUID); err != nil {
		return nil, fmt.Errorf("list session secrets: %w", err)
	}
	prefix := jobKey(jobUID)
	var out []SessionSecret
	c := t.bucket(bucketSessionSecrets).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		s, err := t.openSessionSecret(jobUID, k[len(prefix):], k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// ---- commit ----

// CommitSession records a finished session, the restore point it made and
// the point's session secret in one transaction: all three are stored, or,
// on any error, none. sess, pt and secret must name the same job UID and
// file id (a nil secret.FileID means pt's). An unencrypted point takes a
// zero secret; an encrypted one requires it.
func (t *Tx) CommitSession(sess Session, pt Point, secret SessionSecret) error {
	if sess.JobUID != pt.JobUID {
		return fmt.Errorf("commit session %q: session is of job uid %s, point of %s", sess.ID, sess.JobUID, pt.JobUID)
	}
	if !bytes.Equal(sess.FileID, pt.FileID) {
		return fmt.Errorf("commit session %q: session made file %x, point is file %x", sess.ID, sess.FileID, pt.FileID)
	}
	if secret.FileID == nil {
		secret.FileID = pt.FileID
	}
	hasSecret := len(secret.Secret) > 0
	switch {
	case pt.Encrypted && !hasSecret && pt.Wrapped == "":
		return fmt.Errorf("commit session %q: point %x is encrypted but no session secret was given", sess.ID, pt.FileID)
	case !pt.Encrypted && hasSecret:
		return fmt.Errorf("commit session %q: point %x is not encrypted but a session secret was given", sess.ID, pt.FileID)
	case hasSecret && !bytes.Equal(secret.FileID, pt.FileID):
		return fmt.Errorf("commit session %q: session secret is of file %x, point is file %x", sess.ID, secret.FileID, pt.FileID)
	}
	if err := t.PutSession(sess); err != nil {
		return fmt.Errorf("commit session %q: %w", sess.ID, err)
	}
	if err := t.PutPoint(pt); err != nil {
		return fmt.Errorf("commit session %q: %w", sess.ID, err)
	}
	if hasSecret {
		if err := t.PutSessionSecret(pt.JobUID, secret); err != nil {
			return fmt.Errorf("commit session %q: %w", sess.ID, err)
		}
	}
	return nil
}

// DeletePoint forgets a restore point and its session secret, when its
// file is gone from its repository (retention) or was never committed.
func (t *Tx) DeletePoint(jobUID string, fileID []byte) error {
	if err := t.bucket(bucketPoints).Delete(jobKey(jobUID, fileID)); err != nil {
		return err
	}
	return t.bucket(bucketSessionSecrets).Delete(jobKey(jobUID, fileID))
}
