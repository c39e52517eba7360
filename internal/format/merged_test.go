package format

import (
	"bytes"
	"testing"

	"github.com/ferrybackup/ferry/internal/keys"
)

// TestMergedFull checks kind 3: a full at a sequence of 2 or more with no
// parent, which encodes, parses, opens as a whole file and reads back its
// records and catalog like any other file; and the kind rules around it.
func TestMergedFull(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		s := smallSpec(t, encrypted)
		s.header.Kind, s.header.Sequence = KindMerged, 5
		b := s.build(t)
		f, err := Open(bytes.NewReader(b), int64(len(b)), "merged")
		if err != nil {
			t.Fatalf("encrypted=%v: open a merged full: %v", encrypted, err)
		}
		if f.Header.Kind != KindMerged || f.Header.Sequence != 5 || !f.Header.ParentID.IsZero() {
			t.Fatalf("header: kind %v sequence %d parent %s", f.Header.Kind, f.Header.Sequence, f.Header.ParentID)
		}
		h, hb, err := ReadHeader(bytes.NewReader(b), int64(len(b)), "merged")
		if err != nil || !sameHeader(h, f.Header) || !bytes.Equal(hb, f.HeaderBytes) {
			t.Fatalf("ReadHeader: %v", err)
		}
		got, err := readAll(b, "merged", keys.NewPasswordCache(testPassword))
		if err != nil {
			t.Fatalf("read a merged full: %v", err)
		}
		if !sameCatalog(got.catalog, &s.catalog) {
			t.Error("catalog differs")
		}
	}
	if !KindMerged.IsFull() || !KindFull.IsFull() || KindIncremental.IsFull() || Kind(4).IsFull() {
		t.Error("IsFull")
	}
	var k Kind
	if txt, _ := KindMerged.MarshalText(); k.UnmarshalText(txt) != nil || k != KindMerged {
		t.Errorf("kind %q does not read back", txt)
	}
	// The rules of docs/format.md, "Rules a reader enforces".
	for _, c := range []struct {
		kind   Kind
		seq    uint32
		parent bool
		ok     bool
	}{
		{KindMerged, 2, false, true},
		{KindMerged, 1<<32 - 1, false, true},
		{KindMerged, 1, false, false},
		{KindMerged, 0, false, false},
		{KindMerged, 2, true, false},
		{KindFull, 2, false, false},
		{KindIncremental, 2, false, false},
		{KindIncremental, 2, true, true},
		{4, 2, false, false},
	} {
		h := testHeader()
		h.KeyTableCap = 512
		h.Kind, h.Sequence = c.kind, c.seq
		if c.parent {
			h.ParentID = testID(0x77)
		}
		if err := h.Validate(); (err == nil) != c.ok {
			t.Errorf("kind %v sequence %d parent %v: Validate() = %v", c.kind, c.seq, c.parent, err)
		}
	}
}
