package keys

import "testing"

func TestTransitEntryRoundTrip(t *testing.T) {
	e := &TransitEntry{Mount: "transit", Namespace: "ns1", Key: "ferry-job", Ciphertext: "vault:v3:AAAA"}
	got, err := ParseTransitEntry(e.Marshal())
	if err != nil || *got != *e || got.Version() != 3 {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	b := e.Marshal()
	for i := range len(b) {
		if _, err := ParseTransitEntry(b[:i]); err == nil {
			t.Fatalf("a truncated entry of %d bytes parsed", i)
		}
	}
	if _, err := ParseTransitEntry(append(b, 0)); err == nil {
		t.Fatal("trailing bytes accepted")
	}
	if _, err := ParseTransitEntry((&TransitEntry{Mount: "transit", Key: "k"}).Marshal()); err == nil {
		t.Fatal("an entry without ciphertext parsed")
	}
}
