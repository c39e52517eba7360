// Package keyring opens the session secrets of backup files with the keys a
// user holds (today: passwords; later also Vault Transit and a recovery
// key), and wraps new session secrets for new files.
package keyring

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keys"
)

// ErrWrongPassword is returned when none of the passwords opens a file.
var ErrWrongPassword = errors.New("wrong password")

// ErrNeedKey is returned for an encrypted file when no key was given.
var ErrNeedKey = errors.New("backup file is encrypted and no password was given")

// Transit unwraps secrets wrapped by a HashiCorp Vault Transit key
// (package kms implements it).
type Transit interface {
	Unwrap(ctx context.Context, key string, wrapped []string) ([][]byte, error)
}

// Keyring holds the keys a user gave for opening files.
type Keyring struct {
	transit   Transit
	recovery  *keys.RecoveryPrivate
	passwords []*keys.PasswordCache
	sessions  map[keys.KeyID]*keys.Session
	wrappers  map[keys.KeyID]*keys.PasswordKey
}

// New makes a keyring from zero or more passwords.
func New(passwords ...[]byte) *Keyring {
	k := &Keyring{sessions: map[keys.KeyID]*keys.Session{}, wrappers: map[keys.KeyID]*keys.PasswordKey{}}
	for _, p := range passwords {
		k.passwords = append(k.passwords, keys.NewPasswordCache(p))
	}
	return k
}

// WithRecovery lets the keyring open entries sealed to the recovery key.
func (k *Keyring) WithRecovery(r *keys.RecoveryPrivate) *Keyring { k.recovery = r; return k }

// WithTransit lets the keyring open entries wrapped by Vault Transit.
func (k *Keyring) WithTransit(t Transit) *Keyring { k.transit = t; return k }

// AddSession adds an unwrapped session secret, as the controller hands
// them to an agent for one session.
func (k *Keyring) AddSession(s *keys.Session) { k.sessions[s.ID()] = s }

// Empty reports whether the keyring holds no key at all.
func (k *Keyring) Empty() bool {
	return len(k.passwords) == 0 && len(k.sessions) == 0 && k.transit == nil && k.recovery == nil
}

// Session opens the session secret id of file f. The error names the file
// and, for a wrong password, the hint stored with it.
func (k *Keyring) Session(f *format.File, id keys.KeyID) (*keys.Session, error) {
	if s, ok := k.sessions[id]; ok {
		return s, nil
	}
	var hint string
	tried := false
	var transitErr error
	if k.recovery != nil {
		for _, e := range f.KeyTable.For(id) {
			if e.Type != format.EntryRecovery {
				continue
			}
			if s, err := k.recovery.Open(e.Data, id); err == nil {
				k.sessions[id] = s
				return s, nil
			}
		}
	}
	for _, e := range f.KeyTable.For(id) {
		if e.Type == format.EntryTransit {
			s, err := k.openTransit(f, e, id)
			if err == nil {
				k.sessions[id] = s
				return s, nil
			}
			transitErr = err
			continue
		}
		if e.Type != format.EntryPassword {
			continue
		}
		pe, err := keys.ParsePasswordEntry(e.Data)
		if err != nil {
			return nil, fmt.Errorf("backup file %s: key table: %w", f.Name, err)
		}
		if pe.Hint != "" {
			hint = pe.Hint
		}
		for _, c := range k.passwords {
			tried = true
			pk, err := c.Key(pe)
			if err != nil {
				return nil, fmt.Errorf("backup file %s: %w", f.Name, err)
			}
			s, err := pk.Unwrap(pe, id)
			if errors.Is(err, keys.ErrWrongKey) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("backup file %s: %w", f.Name, err)
			}
			k.sessions[id] = s
			k.wrappers[id] = pk
			return s, nil
		}
	}
	switch {
	case transitErr != nil && !tried:
		return nil, transitErr
	case len(f.KeyTable.For(id)) == 0:
		return nil, fmt.Errorf("backup file %s: the key table holds no wrapped copy of secret %x", f.Name, id[:4])
	case !tried && k.Empty():
		return nil, fmt.Errorf("backup file %s: %w%s", f.Name, ErrNeedKey, hintText(hint))
	case !tried:
		return nil, fmt.Errorf("backup file %s: none of its key table entries is a password entry, and only passwords were given", f.Name)
	}
	return nil, fmt.Errorf("backup file %s: %w%s", f.Name, ErrWrongPassword, hintText(hint))
}

// openTransit unwraps a Transit entry through Vault.
func (k *Keyring) openTransit(f *format.File, e format.KeyEntry, id keys.KeyID) (*keys.Session, error) {
	te, err := keys.ParseTransitEntry(e.Data)
	if err != nil {
		return nil, fmt.Errorf("backup file %s: key table: %w", f.Name, err)
	}
	if k.transit == nil {
		return nil, fmt.Errorf("backup file %s: %w: its session secret is wrapped by Vault Transit key %q (mount %q); set VAULT_ADDR and VAULT_TOKEN, or use the recovery key", f.Name, ErrNeedKey, te.Key, te.Mount)
	}
	out, err := k.transit.Unwrap(context.Background(), te.Key, []string{te.Ciphertext})
	if err != nil {
		return nil, fmt.Errorf("backup file %s: %w", f.Name, err)
	}
	s, err := keys.SessionWithID(out[0], id[:])
	if err != nil {
		return nil, fmt.Errorf("backup file %s: Vault unwrapped a secret that is not the file's: %w", f.Name, err)
	}
	return s, nil
}

func hintText(h string) string {
	if h == "" {
		return ""
	}
	return fmt.Sprintf(" (password hint: %q)", h)
}

// PasswordKeyFor returns the password key that opened secret id, so a new
// file of the same chain can reuse its salt and cost no new Argon2id run.
func (k *Keyring) PasswordKeyFor(id keys.KeyID) *keys.PasswordKey { return k.wrappers[id] }

// Open opens every session secret f names, and returns them by key id.
func (k *Keyring) Open(f *format.File) (map[keys.KeyID]*keys.Session, error) {
	out := make(map[keys.KeyID]*keys.Session, len(f.Header.Secrets))
	for _, id := range f.Header.Secrets {
		s, err := k.Session(f, id)
		if err != nil {
			return nil, err
		}
		out[id] = s
	}
	return out, nil
}

// PasswordTable wraps session s under pk into a fresh key table.
func PasswordTable(pk *keys.PasswordKey, s *keys.Session) (format.KeyTable, error) {
	e, err := pk.Wrap(s)
	if err != nil {
		return format.KeyTable{}, fmt.Errorf("wrap session secret: %w", err)
	}
	return format.KeyTable{Generation: 1, Entries: []format.KeyEntry{{Secret: s.ID(), Type: format.EntryPassword, Data: e.Marshal()}}}, nil
}
