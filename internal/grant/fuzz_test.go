package grant

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
)

// FuzzVerify: Verify takes any bytes a source presents. Signed by the
// trusted key (a controller gone wrong), they parse or are refused, never
// panic; any change to the signature is refused; an unsigned message
// never passes.
func FuzzVerify(f *testing.F) {
	s, err := NewSigner()
	if err != nil {
		f.Fatal(err)
	}
	good, _ := proto.Marshal(&targetv1.Grant{SessionId: "s", Job: "j", Repository: "r", Backup: "b", ExpiresUnix: 4102444800})
	f.Add(good, uint16(0))
	f.Add([]byte{}, uint16(3))
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, uint16(64))
	now := time.Unix(1_700_000_000, 0)
	trusted := []ed25519.PublicKey{s.Public()}
	f.Fuzz(func(t *testing.T, msg []byte, flip uint16) {
		sig := ed25519.Sign(s.key, append([]byte(context), msg...))
		g, err := Verify(trusted, msg, sig, now)
		if err == nil && g == nil || err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Verify = %v, %v", g, err)
		}
		bad := append([]byte(nil), sig...)
		bad[int(flip)%len(bad)] ^= 1 << (flip % 8)
		if _, err := Verify(trusted, msg, bad, now); err == nil {
			t.Fatal("a grant with an altered signature was accepted")
		}
		if _, err := Verify(trusted, msg, msg, now); err == nil {
			t.Fatal("a grant signed with its own bytes was accepted")
		}
	})
}
