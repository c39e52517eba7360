package catalog

import (
	"bytes"
	"crypto/rand"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func openTest(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

var t0 = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

func wantNotFound(t *testing.T, err error, msg string) {
	t.Helper()
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if err.Error() != msg {
		t.Fatalf("err = %q, want %q", err, msg)
	}
}

func TestAgentRoundTrip(t *testing.T) {
	s := openTest(t, t.TempDir())
	a := Agent{Name: "site-b", Address: "10.0.0.2:7443", Role: "target", AddedAt: t0}
	if err := s.PutAgent(a); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAgent(Agent{Name: "site-a", Address: "10.0.0.1:7443", Role: "source"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetAgent("site-b")
	if err != nil || !reflect.DeepEqual(got, a) {
		t.Fatalf("GetAgent = %+v, %v; want %+v", got, err, a)
	}
	// A zero AddedAt keeps the stored one.
	if err := s.PutAgent(Agent{Name: "site-b", Address: "10.0.0.3:7443", Role: "target"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetAgent("site-b"); !got.AddedAt.Equal(t0) || got.Address != "10.0.0.3:7443" {
		t.Fatalf("after update: %+v", got)
	}
	all, err := s.ListAgents()
	if err != nil || len(all) != 2 || all[0].Name != "site-a" || all[1].Name != "site-b" || all[0].AddedAt.IsZero() {
		t.Fatalf("ListAgents = %+v, %v", all, err)
	}
	if err := s.DeleteAgent("site-b"); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetAgent("site-b")
	wantNotFound(t, err, `agent "site-b" not found`)
	wantNotFound(t, s.DeleteAgent("site-b"), `agent "site-b" not found`)
}

func TestJobRoundTrip(t *testing.T) {
	s := openTest(t, t.TempDir())
	j := Job{
		Name: "nightly", Kind: "copy",
		FromAgent: "site-a", FromRepository: "main", FromJob: "docs",
		ToAgent: "site-b", ToRepository: "offsite",
		Encryption: "password", PasswordHint: "the usual", KMSKey: "",
		BlockSize: 1 << 20, Compression: "zstd", CompressionLevel: 3,
		KeyID: "k1", BackupID: []byte{1, 2}, ChainID: []byte{3, 4}, NewChainPending: true,
		CreatedAt: t0,
	}
	stored, err := s.PutJob(j)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored.UID) != 32 || !stored.CreatedAt.Equal(t0) || stored.UpdatedAt.IsZero() {
		t.Fatalf("PutJob = %+v", stored)
	}
	got, err := s.GetJob("nightly")
	if err != nil || !reflect.DeepEqual(got, stored) {
		t.Fatalf("GetJob = %+v, %v\nwant %+v", got, err, stored)
	}

	// An update without a UID keeps the UID and CreatedAt.
	j.Compression = "none"
	j.CreatedAt = time.Time{}
	again, err := s.PutJob(j)
	if err != nil || again.UID != stored.UID || !again.CreatedAt.Equal(t0) || again.Compression != "none" {
		t.Fatalf("second PutJob = %+v, %v", again, err)
	}
	// A UID of another job is refused.
	j.UID = NewID()
	if _, err := s.PutJob(j); !errors.Is(err, ErrExists) {
		t.Fatalf("PutJob with foreign uid: err = %v, want ErrExists", err)
	}

	if _, err := s.PutJob(Job{Name: "alpha", Kind: "backup", Agent: "site-a", Repository: "main", Path: "/srv"}); err != nil {
		t.Fatal(err)
	}
	all, err := s.ListJobs()
	if err != nil || len(all) != 2 || all[0].Name != "alpha" || all[1].Name != "nightly" {
		t.Fatalf("ListJobs = %+v, %v", all, err)
	}

	_, err = s.GetJob("missing")
	wantNotFound(t, err, `job "missing" not found`)
	wantNotFound(t, s.DeleteJob("missing"), `job "missing" not found`)
}

// Deleting a job keeps its points and secrets; a new job of the same name
// gets a new UID and sees none of them.
func TestDeleteJobKeepsHistory(t *testing.T) {
	s := openTest(t, t.TempDir())
	old, err := s.PutJob(Job{Name: "nightly", Kind: "backup", Encryption: "password"})
	if err != nil {
		t.Fatal(err)
	}
	fid := []byte("file-1")
	sec := SessionSecret{FileID: fid, KeyID: []byte("kid"), Secret: randBytes(t, 32)}
	err = s.CommitSession(
		Session{ID: "s1", Job: "nightly", JobUID: old.UID, Result: "success", StartedAt: t0, FileID: fid},
		Point{Job: "nightly", JobUID: old.UID, FileID: fid, ChainID: []byte("c"), Encrypted: true, Created: t0},
		sec)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteJob("nightly"); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetJob("nightly")
	wantNotFound(t, err, `job "nightly" not found`)

	fresh, err := s.PutJob(Job{Name: "nightly", Kind: "backup"})
	if err != nil {
		t.Fatal(err)
	}
	if fresh.UID == old.UID {
		t.Fatal("re-created job inherited the old UID")
	}
	for _, c := range []struct {
		uid  string
		want int
	}{{old.UID, 1}, {fresh.UID, 0}} {
		pts, err := s.ListPoints(c.uid)
		if err != nil || len(pts) != c.want {
			t.Errorf("ListPoints(%s) = %d points, %v; want %d", c.uid, len(pts), err, c.want)
		}
		secs, err := s.ListSessionSecrets(c.uid)
		if err != nil || len(secs) != c.want {
			t.Errorf("ListSessionSecrets(%s) = %d, %v; want %d", c.uid, len(secs), err, c.want)
		}
		sess, err := s.ListSessions(c.uid)
		if err != nil || len(sess) != c.want {
			t.Errorf("ListSessions(%s) = %d, %v; want %d", c.uid, len(sess), err, c.want)
		}
	}
	got, err := s.GetSessionSecret(old.UID, fid)
	if err != nil || !bytes.Equal(got.Secret, sec.Secret) {
		t.Fatalf("old job's secret after delete: %v", err)
	}
}

func TestSessions(t *testing.T) {
	s := openTest(t, t.TempDir())
	// "u1" is a prefix of "u1x": listing one must not pick up the other.
	mk := func(id, uid string, minutes int) Session {
		return Session{
			ID: id, Job: "j-" + uid, JobUID: uid, Kind: "copy", Mode: "default", Result: "success",
			StartedAt: t0.Add(time.Duration(minutes) * time.Minute), EndedAt: t0.Add(time.Duration(minutes+1) * time.Minute),
			BytesRead: 10, BytesSent: 20, BytesWritten: 30, Records: 4,
			FileID: []byte(id), Sequence: uint32(minutes), SourceAgent: "a", TargetAgent: "b",
		}
	}
	in := []Session{mk("a", "u1", 5), mk("b", "u1x", 1), mk("c", "u1", 9), mk("d", "u1", -3), mk("e", "u1x", 7)}
	for _, sess := range in {
		if err := s.PutSession(sess); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetSession("c")
	if err != nil || !reflect.DeepEqual(got, in[2]) {
		t.Fatalf("GetSession = %+v, %v\nwant %+v", got, err, in[2])
	}
	ids := func(ss []Session) string {
		var b strings.Builder
		for _, s := range ss {
			b.WriteString(s.ID)
		}
		return b.String()
	}
	check := func(uid, want string) {
		t.Helper()
		ss, err := s.ListSessions(uid)
		if err != nil || ids(ss) != want {
			t.Fatalf("ListSessions(%q) = %q, %v; want %q", uid, ids(ss), err, want)
		}
	}
	check("u1", "cad")
	check("u1x", "eb")
	check("", "ceabd")
	check("u2", "")

	// Restarting a session at a new time moves it in the order, once.
	moved := in[3]
	moved.StartedAt = t0.Add(time.Hour)
	moved.Result = "running"
	if err := s.PutSession(moved); err != nil {
		t.Fatal(err)
	}
	check("u1", "dca")
	check("", "dceab")

	moved.JobUID = "u1x"
	if err := s.PutSession(moved); err == nil {
		t.Fatal("moving a session to another job succeeded")
	}
	if err := s.PutSession(Session{ID: "z", JobUID: "u1"}); err == nil {
		t.Fatal("session without a start time accepted")
	}
	_, err = s.GetSession("nope")
	wantNotFound(t, err, `session "nope" not found`)
}

func TestPointsOrder(t *testing.T) {
	s := openTest(t, t.TempDir())
	uid := NewID()
	// Chain "zz" starts first, so it lists first although its id sorts last.
	mk := func(file, chain string, seq uint32, minutes int) Point {
		return Point{
			Job: "nightly", JobUID: uid, FileID: []byte(file), BackupID: []byte("bk"),
			ChainID: []byte(chain), ParentID: []byte("p"), Sequence: seq, Kind: "incremental",
			Created: t0.Add(time.Duration(minutes) * time.Minute), Size: 100, Encrypted: true,
			KeyRecord: "k1", KeyRefs: []string{"k1", "recovery"}, Hint: "h",
			Agent: "site-b", Repository: "offsite", Backup: "nightly",
		}
	}
	in := []Point{
		mk("f5", "aa", 1, 50), mk("f1", "zz", 0, 0), mk("f4", "aa", 0, 40),
		mk("f3", "zz", 2, 20), mk("f2", "zz", 1, 10),
	}
	for _, p := range in {
		if err := s.PutPoint(p); err != nil {
			t.Fatal(err)
		}
	}
	// A point of another job does not list with these.
	if err := s.PutPoint(Point{JobUID: NewID(), FileID: []byte("f0"), ChainID: []byte("aa")}); err != nil {
		t.Fatal(err)
	}
	pts, err := s.ListPoints(uid)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, p := range pts {
		order = append(order, string(p.FileID))
	}
	if got, want := strings.Join(order, ","), "f1,f2,f3,f4,f5"; got != want {
		t.Fatalf("ListPoints order = %s, want %s", got, want)
	}
	got, err := s.GetPoint(uid, []byte("f3"))
	if err != nil || !reflect.DeepEqual(got, in[3]) {
		t.Fatalf("GetPoint = %+v, %v\nwant %+v", got, err, in[3])
	}
	_, err = s.GetPoint(uid, []byte{0xab})
	wantNotFound(t, err, `point "`+uid+`/ab" not found`)
}
