package controller

import (
	"bytes"
	"context"
	"fmt"

	"github.com/ferrybackup/ferry/internal/catalog"
	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	repositoryv1 "github.com/ferrybackup/ferry/internal/gen/ferry/repository/v1"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
)

// RotateKey adds a version to a KMS job's Transit key. Points keep
// opening with their older versions until RewrapKeys moves them.
func (s *Server) RotateKey(ctx context.Context, req *controllerv1.RotateKeyRequest) (*controllerv1.RotateKeyResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	j, err := s.job(req.Job)
	if err != nil {
		return nil, toStatus(err)
	}
	if j.Encryption != encKMS {
		return nil, toStatus(invalidf("job %s is not KMS-encrypted; a password job changes its key with `controller job update --password-file`, then `controller key rewrap`", j.Name))
	}
	if err := s.o.Transit.Rotate(ctx, j.KMSKey); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("rotated the transit key", "job", j.Name, "key", j.KMSKey)
	return &controllerv1.RotateKeyResponse{Key: j.KMSKey}, nil
}

// RewrapKeys rewraps the session secret of every file of a job under the
// job's current key — the latest Transit key version (Vault's rewrap, which
// never returns the plaintext) or the current password — and has the agent
// holding the files rewrite only their key tables. Recovery entries stay.
func (s *Server) RewrapKeys(ctx context.Context, req *controllerv1.RewrapKeysRequest) (*controllerv1.RewrapKeysResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	j, err := s.job(req.Job)
	if err != nil {
		return nil, toStatus(err)
	}
	if j.Encryption == encNone {
		return nil, toStatus(invalidf("job %s is not encrypted: nothing to rewrap", j.Name))
	}
	s.mu.Lock()
	_, busy := s.running[j.UID]
	s.mu.Unlock()
	if busy {
		return nil, toStatus(fmt.Errorf("%w: job %s has a session running", errBusy, j.Name))
	}
	a, repoName, rc, err := s.holderClient(j)
	if err != nil {
		return nil, toStatus(err)
	}
	kresp, err := rc.GetKeyTables(ctx, &repositoryv1.GetKeyTablesRequest{Repository: repoName, Backup: j.Name})
	if err != nil {
		return nil, toStatus(agentErr(a, "read key tables", err))
	}
	tables := kresp.Tables
	// Every point, those retention merged away too: a merged file's key
	// table holds their wrapped secrets, matched by the wrapped form.
	pts, err := s.store.ListAllPoints(j.UID)
	if err != nil {
		return nil, toStatus(err)
	}
	byWrapped := map[string]*catalog.Point{}
	for i := range pts {
		if pts[i].Wrapped != "" {
			byWrapped[pts[i].Wrapped] = &pts[i]
		}
	}
	var updates []*commonv1.FileKeyTable
	var changed []catalog.Point
	switch j.Encryption {
	case encKMS:
		updates, changed, err = s.rewrapTransit(ctx, j, tables, byWrapped)
	case encPass:
		updates, err = s.rewrapPassword(j, tables)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	wresp, err := rc.RewriteKeyTables(ctx, &repositoryv1.RewriteKeyTablesRequest{Repository: repoName, Backup: j.Name, Tables: updates})
	if err != nil {
		return nil, toStatus(agentErr(a, "rewrite key tables", err))
	}
	n := wresp.Files
	for _, p := range changed {
		if err := s.store.PutPoint(p); err != nil {
			return nil, toStatus(err)
		}
	}
	s.log.Info("rewrapped the session secrets of a job", "job", j.Name, "files", n)
	return &controllerv1.RewrapKeysResponse{Files: n}, nil
}

func parseTable(t *commonv1.FileKeyTable) (*format.KeyTable, error) {
	return format.ParseKeyTable(fmt.Sprintf("file %x", t.FileId), 0, t.KeyTable, uint32(len(t.KeyTable)/2))
}

func marshalTable(kt *format.KeyTable, like []byte) ([]byte, error) {
	return format.MarshalKeyTable(kt, uint32(len(like)/2))
}

// rewrapTransit rewraps every Transit entry with one Vault request.
func (s *Server) rewrapTransit(ctx context.Context, j catalog.Job, tables []*commonv1.FileKeyTable, byWrapped map[string]*catalog.Point) ([]*commonv1.FileKeyTable, []catalog.Point, error) {
	type ref struct{ table, entry int }
	var refs []ref
	var wrapped []string
	kts := make([]*format.KeyTable, len(tables))
	for ti, t := range tables {
		kt, err := parseTable(t)
		if err != nil {
			return nil, nil, err
		}
		kts[ti] = kt
		for ei, e := range kt.Entries {
			if e.Type != format.EntryTransit {
				continue
			}
			te, err := keys.ParseTransitEntry(e.Data)
			if err != nil {
				return nil, nil, err
			}
			if te.Key != j.KMSKey {
				return nil, nil, invalidf("file %x is wrapped by Transit key %q, the job uses %q", t.FileId, te.Key, j.KMSKey)
			}
			refs = append(refs, ref{ti, ei})
			wrapped = append(wrapped, te.Ciphertext)
		}
	}
	re, err := s.o.Transit.Rewrap(ctx, j.KMSKey, wrapped)
	if err != nil {
		return nil, nil, err
	}
	var changed []catalog.Point
	for i, r := range refs {
		e := &kts[r.table].Entries[r.entry]
		te, _ := keys.ParseTransitEntry(e.Data)
		p := byWrapped[te.Ciphertext]
		te.Ciphertext = re[i]
		e.Data = te.Marshal()
		if p != nil {
			cp := *p
			cp.Wrapped = re[i]
			cp.KeyRefs = []string{te.Ref()}
			changed = append(changed, cp)
		}
	}
	var out []*commonv1.FileKeyTable
	for ti, t := range tables {
		kb, err := marshalTable(kts[ti], t.KeyTable)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, &commonv1.FileKeyTable{FileId: t.FileId, KeyTable: kb})
	}
	return out, changed, nil
}

// rewrapPassword wraps every file's secret under the job's current
// password key, dropping the entries of older passwords.
func (s *Server) rewrapPassword(j catalog.Job, tables []*commonv1.FileKeyTable) ([]*commonv1.FileKeyTable, error) {
	pk, err := s.passwordKey(j)
	if err != nil {
		return nil, err
	}
	secrets, err := s.store.ListSessionSecrets(j.UID)
	if err != nil {
		return nil, err
	}
	var out []*commonv1.FileKeyTable
	for _, t := range tables {
		kt, err := parseTable(t)
		if err != nil {
			return nil, err
		}
		var sec *catalog.SessionSecret
		for i := range secrets {
			if bytes.Equal(secrets[i].FileID, t.FileId) {
				sec = &secrets[i]
			}
		}
		if sec == nil {
			return nil, fmt.Errorf("the controller has no key for file %x of job %s", t.FileId, j.Name)
		}
		sess, err := keys.SessionFromSecret(sec.Secret)
		if err != nil {
			return nil, err
		}
		fresh, err := keyring.PasswordTable(pk, sess)
		if err != nil {
			return nil, err
		}
		entries := fresh.Entries
		for _, e := range kt.Entries {
			if e.Type != format.EntryPassword {
				entries = append(entries, e) // recovery (and any other) entries stay
			}
		}
		kt.Entries = entries
		kb, err := marshalTable(kt, t.KeyTable)
		if err != nil {
			return nil, err
		}
		out = append(out, &commonv1.FileKeyTable{FileId: t.FileId, KeyTable: kb})
	}
	return out, nil
}
