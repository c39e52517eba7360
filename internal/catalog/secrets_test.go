package catalog

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestKeyRecordRoundTrip(t *testing.T) {
	s := openTest(t, t.TempDir())
	rec := KeyRecord{ID: "k1", Job: "nightly", JobUID: NewID(), Kind: "password", Created: t0, Hint: "the usual"}
	key := randBytes(t, 32)
	if err := s.PutKeyRecord(rec, key); err != nil {
		t.Fatal(err)
	}
	kms := KeyRecord{ID: "k2", Job: "nightly", JobUID: rec.JobUID, Kind: "kms", Created: t0.Add(time.Hour)}
	if err := s.PutKeyRecord(kms, nil); err != nil {
		t.Fatal(err)
	}
	got, sec, err := s.GetKeyRecord("k1")
	if err != nil || !reflect.DeepEqual(got, rec) || !bytes.Equal(sec, key) {
		t.Fatalf("GetKeyRecord = %+v, %v; want %+v and the key", got, err, rec)
	}
	got, sec, err = s.GetKeyRecord("k2")
	if err != nil || !reflect.DeepEqual(got, kms) || len(sec) != 0 {
		t.Fatalf("GetKeyRecord(kms) = %+v, %d-byte secret, %v", got, len(sec), err)
	}

	// Identical again is a no-op; anything different is refused.
	if err := s.PutKeyRecord(rec, key); err != nil {
		t.Fatalf("identical PutKeyRecord: %v", err)
	}
	if err := s.PutKeyRecord(rec, randBytes(t, 32)); !errors.Is(err, ErrExists) {
		t.Fatalf("PutKeyRecord with other key: err = %v, want ErrExists", err)
	}
	changed := rec
	changed.Hint = "other"
	if err := s.PutKeyRecord(changed, key); !errors.Is(err, ErrExists) {
		t.Fatalf("PutKeyRecord with other hint: err = %v, want ErrExists", err)
	}

	list, err := s.ListKeyRecords(rec.JobUID)
	if err != nil || len(list) != 2 || !reflect.DeepEqual(list[0], rec) || !reflect.DeepEqual(list[1], kms) {
		t.Fatalf("ListKeyRecords = %+v, %v", list, err)
	}
	if list, _ := s.ListKeyRecords(NewID()); len(list) != 0 {
		t.Fatalf("ListKeyRecords(other job) = %+v", list)
	}
	_, _, err = s.GetKeyRecord("k9")
	wantNotFound(t, err, `key record "k9" not found`)
}

func TestSessionSecretRoundTrip(t *testing.T) {
	s := openTest(t, t.TempDir())
	uid, other := NewID(), NewID()
	var want []SessionSecret
	for _, f := range []string{"f2", "f1", "f3"} {
		sec := SessionSecret{FileID: []byte(f), KeyID: randBytes(t, 16), Secret: randBytes(t, 32)}
		if err := s.PutSessionSecret(uid, sec); err != nil {
			t.Fatal(err)
		}
		want = append(want, sec)
	}
	if err := s.PutSessionSecret(other, SessionSecret{FileID: []byte("f1"), Secret: randBytes(t, 32)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSessionSecret(uid, []byte("f2"))
	if err != nil || !equalSecret(got, want[0]) {
		t.Fatalf("GetSessionSecret = %v, %v", got, err)
	}
	list, err := s.ListSessionSecrets(uid)
	if err != nil || len(list) != 3 || !equalSecret(list[0], want[1]) || !equalSecret(list[1], want[0]) || !equalSecret(list[2], want[2]) {
		t.Fatalf("ListSessionSecrets = %v, %v", list, err)
	}

	if err := s.PutSessionSecret(uid, want[0]); err != nil {
		t.Fatalf("identical PutSessionSecret: %v", err)
	}
	conflict := want[0]
	conflict.Secret = randBytes(t, 32)
	err = s.PutSessionSecret(uid, conflict)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("PutSessionSecret with another secret: err = %v, want ErrExists", err)
	}
	noSecretIn(t, err.Error(), want[0].Secret, conflict.Secret)

	_, err = s.GetSessionSecret(uid, []byte{0xfe})
	wantNotFound(t, err, "session secret of job "+uid+" file fe not found")
}

func equalSecret(a, b SessionSecret) bool {
	return bytes.Equal(a.FileID, b.FileID) && bytes.Equal(a.KeyID, b.KeyID) && bytes.Equal(a.Secret, b.Secret)
}

// noSecretIn fails if text holds any secret raw, in hex or in base64.
func noSecretIn(t *testing.T, text string, secrets ...[]byte) {
	t.Helper()
	for _, sec := range secrets {
		for _, form := range encodings(sec) {
			if strings.Contains(strings.ToLower(text), strings.ToLower(string(form))) {
				t.Fatalf("secret appears in %q", text)
			}
		}
	}
}

func encodings(sec []byte) [][]byte {
	return [][]byte{
		sec,
		[]byte(hex.EncodeToString(sec)),
		[]byte(base64.StdEncoding.EncodeToString(sec)),
		[]byte(base64.RawURLEncoding.EncodeToString(sec)),
	}
}

func TestMasterKeyCreatedAndReused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	uid := NewID()
	sec := SessionSecret{FileID: []byte("f"), KeyID: []byte("k"), Secret: randBytes(t, 32)}
	if err := s.PutSessionSecret(uid, sec); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, MasterKeyFile)
	for _, name := range []string{MasterKeyFile, DBFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode = %04o, want 0600", name, perm)
		}
	}
	key1, err := os.ReadFile(keyPath)
	if err != nil || len(key1) != MasterKeySize {
		t.Fatalf("master key: %d bytes, %v", len(key1), err)
	}
	if _, err := os.Stat(keyPath + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary master key left behind: %v", err)
	}

	s = openTest(t, dir)
	got, err := s.GetSessionSecret(uid, []byte("f"))
	if err != nil || !equalSecret(got, sec) {
		t.Fatalf("secret after reopen: %v, %v", got, err)
	}
	key2, _ := os.ReadFile(keyPath)
	if !bytes.Equal(key1, key2) {
		t.Fatal("reopen replaced the master key")
	}
}

func TestMasterKeyRefused(t *testing.T) {
	cases := []struct {
		name  string
		spoil func(t *testing.T, path string)
		want  string
	}{
		{"group and world readable", func(t *testing.T, path string) {
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "has permissions 0644, want 0600"},
		{"executable", func(t *testing.T, path string) {
			if err := os.Chmod(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "has permissions 0700, want 0600"},
		{"short", func(t *testing.T, path string) {
			if err := os.Truncate(path, 31); err != nil {
				t.Fatal(err)
			}
		}, "is 31 bytes, want 32"},
		{"long", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte{'\n'})
			f.Close()
		}, "is 33 bytes, want 32"},
		{"replaced", func(t *testing.T, path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "does not match this catalog"},
		{"missing", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, "is missing, but catalog"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			keyPath := filepath.Join(dir, MasterKeyFile)
			c.spoil(t, keyPath)
			s, err = Open(dir)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), keyPath) {
				t.Fatalf("err = %q, want it to name %s and say %q", err, keyPath, c.want)
			}
		})
	}
}

// A narrower mode than 0600 is fine: only the owner can read it.
func TestMasterKeyReadOnlyAccepted(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	s.Close()
	if err := os.Chmod(filepath.Join(dir, MasterKeyFile), 0o400); err != nil {
		t.Fatal(err)
	}
	openTest(t, dir)
}

func TestSecondOpenFailsFast(t *testing.T) {
	dir := t.TempDir()
	first := openTest(t, dir)
	start := time.Now()
	s, err := Open(dir)
	if err == nil {
		s.Close()
		t.Fatal("second Open succeeded")
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("second Open took %s", elapsed)
	}
	if !errors.Is(err, ErrInUse) {
		t.Errorf("err = %v, want ErrInUse", err)
	}
	want := "catalog " + filepath.Join(dir, DBFile) + " is in use by another controller"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("err = %q, want it to contain %q", err, want)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	openTest(t, dir)
}

// A sealed value copied under another record's key does not open, and the
// error names the record it was read as.
func TestSealedValueMoved(t *testing.T) {
	s := openTest(t, t.TempDir())
	uid, other := NewID(), NewID()
	a := SessionSecret{FileID: []byte{0xaa}, Secret: randBytes(t, 32)}
	b := SessionSecret{FileID: []byte{0xbb}, Secret: randBytes(t, 32)}
	for _, p := range []struct {
		uid string
		s   SessionSecret
	}{{uid, a}, {uid, b}, {other, a}} {
		if err := s.PutSessionSecret(p.uid, p.s); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutKeyRecord(KeyRecord{ID: "k1", Kind: "password"}, randBytes(t, 32)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutKeyRecord(KeyRecord{ID: "k2", Kind: "password"}, randBytes(t, 32)); err != nil {
		t.Fatal(err)
	}

	copyValue := func(bucket string, from, to []byte) {
		t.Helper()
		err := s.db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket([]byte(bucket))
			return bk.Put(to, bytes.Clone(bk.Get(from)))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Same job, other file.
	copyValue(bucketSessionSecrets, jobKey(uid, a.FileID), jobKey(uid, b.FileID))
	_, err := s.GetSessionSecret(uid, b.FileID)
	if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "session secret of job "+uid+" file bb") {
		t.Fatalf("moved to other file: err = %v", err)
	}
	if _, err := s.ListSessionSecrets(uid); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("ListSessionSecrets with a moved value: err = %v", err)
	}
	// Same file, other job.
	copyValue(bucketSessionSecrets, jobKey(uid, a.FileID), jobKey(other, a.FileID))
	if _, err := s.GetSessionSecret(other, a.FileID); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("moved to other job: err = %v", err)
	}
	// A whole key record, metadata and all, under another id.
	copyValue(bucketKeyRecords, []byte("k1"), []byte("k2"))
	_, _, err = s.GetKeyRecord("k2")
	if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), `key record "k2"`) {
		t.Fatalf("moved key record: err = %v", err)
	}
	// The originals still open.
	if _, err := s.GetSessionSecret(uid, a.FileID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetKeyRecord("k1"); err != nil {
		t.Fatal(err)
	}
}

// Scans the raw bytes of catalog.db for every secret the test stored, in
// every encoding a careless implementation might use.
func TestNoPlaintextSecretsOnDisk(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var secrets [][]byte
	uid := NewID()
	for i := range 20 {
		key := randBytes(t, 32)
		secrets = append(secrets, key)
		if err := s.PutKeyRecord(KeyRecord{ID: fmt.Sprint("k", i), JobUID: uid, Kind: "password"}, key); err != nil {
			t.Fatal(err)
		}
		sec := SessionSecret{FileID: randBytes(t, 16), KeyID: randBytes(t, 16), Secret: randBytes(t, 32)}
		secrets = append(secrets, sec.Secret)
		if err := s.PutSessionSecret(uid, sec); err != nil {
			t.Fatal(err)
		}
		csec := SessionSecret{FileID: randBytes(t, 16), Secret: randBytes(t, 32)}
		secrets = append(secrets, csec.Secret)
		err := s.CommitSession(
			Session{ID: fmt.Sprint("s", i), JobUID: uid, StartedAt: t0, FileID: csec.FileID},
			Point{JobUID: uid, FileID: csec.FileID, Encrypted: true},
			csec)
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	master, err := os.ReadFile(filepath.Join(dir, MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, master)
	raw, err := os.ReadFile(filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range secrets {
		for _, form := range encodings(sec) {
			if bytes.Contains(raw, form) {
				t.Fatalf("catalog.db holds a secret in the clear (%d-byte form)", len(form))
			}
		}
	}
	// The test is only meaningful if the scan would have found them.
	if !bytes.Contains(raw, []byte(uid)) {
		t.Fatal("catalog.db does not hold the records at all")
	}
}

func TestCommitSessionAtomic(t *testing.T) {
	s := openTest(t, t.TempDir())
	uid := NewID()
	fid := []byte("file-7")
	earlier := SessionSecret{FileID: fid, KeyID: []byte("k"), Secret: randBytes(t, 32)}
	// The controller stored the file's secret when the session started.
	if err := s.PutSessionSecret(uid, earlier); err != nil {
		t.Fatal(err)
	}
	sess := Session{ID: "s7", JobUID: uid, Result: "success", StartedAt: t0, FileID: fid}
	pt := Point{JobUID: uid, FileID: fid, Encrypted: true, Created: t0}

	// A commit with a different secret for the same file fails in its last
	// step, after the session and point were written in the transaction.
	wrong := SessionSecret{FileID: fid, KeyID: []byte("k"), Secret: randBytes(t, 32)}
	err := s.CommitSession(sess, pt, wrong)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("CommitSession with a conflicting secret: err = %v, want ErrExists", err)
	}
	if _, err := s.GetSession("s7"); !errors.Is(err, ErrNotFound) {
		t.Errorf("session survived a failed commit: %v", err)
	}
	if ss, _ := s.ListSessions(uid); len(ss) != 0 {
		t.Errorf("session index survived a failed commit: %d entries", len(ss))
	}
	if ss, _ := s.ListSessions(""); len(ss) != 0 {
		t.Errorf("session time index survived a failed commit: %d entries", len(ss))
	}
	if _, err := s.GetPoint(uid, fid); !errors.Is(err, ErrNotFound) {
		t.Errorf("point survived a failed commit: %v", err)
	}
	if got, err := s.GetSessionSecret(uid, fid); err != nil || !equalSecret(got, earlier) {
		t.Errorf("secret after failed commit: %v, %v", got, err)
	}

	// The same commit with the stored secret succeeds, and all three are there.
	if err := s.CommitSession(sess, pt, earlier); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession("s7"); err != nil {
		t.Error(err)
	}
	if _, err := s.GetPoint(uid, fid); err != nil {
		t.Error(err)
	}

	// An unencrypted point takes no secret.
	plain := Point{JobUID: uid, FileID: []byte("file-8")}
	if err := s.CommitSession(Session{ID: "s8", JobUID: uid, StartedAt: t0, FileID: plain.FileID}, plain, SessionSecret{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSessionSecret(uid, plain.FileID); !errors.Is(err, ErrNotFound) {
		t.Errorf("plain point got a secret: %v", err)
	}
}

func TestCommitSessionMismatch(t *testing.T) {
	s := openTest(t, t.TempDir())
	uid := NewID()
	sess := Session{ID: "s", JobUID: uid, StartedAt: t0, FileID: []byte("f")}
	pt := Point{JobUID: uid, FileID: []byte("f"), Encrypted: true}
	sec := SessionSecret{FileID: []byte("f"), Secret: randBytes(t, 32)}
	cases := map[string]func(*Session, *Point, *SessionSecret){
		"job uid":          func(s *Session, p *Point, x *SessionSecret) { p.JobUID = NewID() },
		"session file":     func(s *Session, p *Point, x *SessionSecret) { s.FileID = []byte("g") },
		"secret file":      func(s *Session, p *Point, x *SessionSecret) { x.FileID = []byte("g") },
		"encrypted no key": func(s *Session, p *Point, x *SessionSecret) { x.Secret = nil },
		"plain with key":   func(s *Session, p *Point, x *SessionSecret) { p.Encrypted = false },
	}
	for name, spoil := range cases {
		ss, pp, xx := sess, pt, sec
		spoil(&ss, &pp, &xx)
		if err := s.CommitSession(ss, pp, xx); err == nil {
			t.Errorf("%s: CommitSession succeeded", name)
		}
	}
	if ss, _ := s.ListSessions(""); len(ss) != 0 {
		t.Fatalf("refused commits left %d sessions", len(ss))
	}
}

// Update commits all or nothing.
func TestUpdateRollsBack(t *testing.T) {
	s := openTest(t, t.TempDir())
	boom := errors.New("boom")
	err := s.Update(func(tx *Tx) error {
		if _, err := tx.PutJob(Job{Name: "j"}); err != nil {
			return err
		}
		if err := tx.PutAgent(Agent{Name: "a"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v", err)
	}
	if _, err := s.GetJob("j"); !errors.Is(err, ErrNotFound) {
		t.Errorf("job survived rollback: %v", err)
	}
	if _, err := s.GetAgent("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("agent survived rollback: %v", err)
	}
	if err := s.View(func(tx *Tx) error { return tx.PutAgent(Agent{Name: "a"}) }); err == nil {
		t.Error("write in View succeeded")
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	sec := SessionSecret{FileID: []byte{0xf1}, KeyID: []byte{0xc1}, Secret: randBytes(t, 32)}
	key := Secret(randBytes(t, 32))
	type holder struct {
		S SessionSecret
		K Secret
		P *SessionSecret
	}
	h := holder{sec, key, &sec}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		for _, v := range []any{sec, &sec, key, h, &h, []SessionSecret{sec}} {
			out := fmt.Sprintf(verb, v)
			noSecretIn(t, out, sec.Secret, key)
		}
	}
	if got := sec.String(); got != "session_secret(file f1, key c1, redacted)" {
		t.Errorf("String() = %q", got)
	}
	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	noSecretIn(t, string(j), sec.Secret, key)
	var back SessionSecret
	if err := json.Unmarshal([]byte(`{"secret":"AAAA"}`), &back); err == nil {
		t.Error("a Secret decoded from JSON")
	}
}

func TestConcurrentUse(t *testing.T) {
	s := openTest(t, t.TempDir())
	uid := NewID()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 25 {
				fid := []byte(fmt.Sprintf("g%d-f%d", g, i))
				err := s.CommitSession(
					Session{ID: string(fid), JobUID: uid, StartedAt: t0.Add(time.Duration(i) * time.Second), FileID: fid},
					Point{JobUID: uid, FileID: fid, Encrypted: true},
					SessionSecret{FileID: fid, Secret: fid})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.ListSessions(uid); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	ss, err := s.ListSessions(uid)
	if err != nil || len(ss) != 100 {
		t.Fatalf("ListSessions = %d, %v", len(ss), err)
	}
	for i := 1; i < len(ss); i++ {
		if ss[i].StartedAt.After(ss[i-1].StartedAt) {
			t.Fatalf("sessions not newest first at %d", i)
		}
	}
}
