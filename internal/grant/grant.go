// Package grant signs and checks session grants: the controller's signed
// statement that one source agent may write one backup file into one
// repository, backup and chain of a target agent, until an expiry. The
// target refuses a transfer without a valid grant, and from any agent but
// the one the grant names.
package grant

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/protobuf/proto"

	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
)

// ErrInvalid matches every refused grant.
var ErrInvalid = errors.New("invalid session grant")

// context prefixes the signed bytes so a grant signature can never be
// taken for a signature over anything else.
const context = "ferry/v1/grant\x00"

// Signer signs grants with the controller's Ed25519 key.
type Signer struct{ key ed25519.PrivateKey }

// NewSigner makes a signer with a fresh key.
func NewSigner() (*Signer, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Signer{key: k}, nil
}

// LoadOrCreate reads the signing key at path, creating it (0600) when
// missing.
func LoadOrCreate(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != ed25519.SeedSize {
			return nil, fmt.Errorf("grant key %s is %d bytes, want %d", path, len(b), ed25519.SeedSize)
		}
		return &Signer{key: ed25519.NewKeyFromSeed(b)}, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read grant key: %w", err)
	}
	s, err := NewSigner()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create grant key: %w", err)
	}
	if _, err := f.Write(s.key.Seed()); err != nil {
		f.Close()
		return nil, fmt.Errorf("write grant key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return s, f.Close()
}

// Public is the key targets verify grants with.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Sign serializes g and signs it.
func (s *Signer) Sign(g *targetv1.Grant) (msg, sig []byte, err error) {
	msg, err = proto.MarshalOptions{Deterministic: true}.Marshal(g)
	if err != nil {
		return nil, nil, fmt.Errorf("encode grant: %w", err)
	}
	return msg, ed25519.Sign(s.key, append([]byte(context), msg...)), nil
}

// Verify checks a grant's signature against trusted keys and its expiry,
// and returns it. The caller checks what it names against the request.
func Verify(trusted []ed25519.PublicKey, msg, sig []byte, now time.Time) (*targetv1.Grant, error) {
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: no signature", ErrInvalid)
	}
	ok := false
	signed := append([]byte(context), msg...)
	for _, k := range trusted {
		if ed25519.Verify(k, signed, sig) {
			ok = true
			break
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: the signature is not the controller's", ErrInvalid)
	}
	g := &targetv1.Grant{}
	if err := proto.Unmarshal(msg, g); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if exp := time.Unix(g.ExpiresUnix, 0); !now.Before(exp) {
		return nil, fmt.Errorf("%w: session %s expired at %s", ErrInvalid, g.SessionId, exp.UTC().Format(time.RFC3339))
	}
	return g, nil
}
