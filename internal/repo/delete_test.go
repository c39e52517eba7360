package repo

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferrybackup/ferry/internal/format"
)

// TestDeletePoints: only the newest points of a chain, or a whole chain,
// may go; a point something left builds on is refused with nothing
// touched; what is left lists and a chain left empty loses its directory.
func TestDeletePoints(t *testing.T) {
	r, err := Create(filepath.Join(t.TempDir(), "r"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.Lock("b")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	c1, c2 := format.ID{1}, format.ID{2}
	p1 := writePoint(t, r, "b", c1, format.ID{}, 1)
	p2 := writePoint(t, r, "b", c1, p1, 2)
	p3 := writePoint(t, r, "b", c1, p2, 3)
	q1 := writePoint(t, r, "b", c2, format.ID{}, 1)
	q2 := writePoint(t, r, "b", c2, q1, 2)
	count := func() int {
		ix, err := r.Index("b")
		if err != nil {
			t.Fatal(err)
		}
		return len(ix.Points())
	}

	if _, _, err := r.DeletePoints("b", []format.ID{p2}); !errors.Is(err, ErrNotTail) || count() != 5 {
		t.Fatalf("deleting a middle point: %v, %d points left", err, count())
	}
	if _, _, err := r.DeletePoints("b", []format.ID{p3, {7, 7}}); !errors.Is(err, ErrNoPoint) || count() != 5 {
		t.Fatalf("deleting an unknown point: %v, %d points left", err, count())
	}
	files, n, err := r.DeletePoints("b", []format.ID{p3, p2, q1, q2})
	if err != nil || files != 4 || n <= 0 {
		t.Fatalf("delete: %d files, %d bytes, %v", files, n, err)
	}
	ix, _ := r.Index("b")
	if len(ix.Chains) != 1 || len(ix.Chains[0].Points) != 1 || ix.Chains[0].Points[0].FileID != p1 {
		t.Fatalf("left: %+v", ix.Chains)
	}
	if _, err := os.Stat(filepath.Join(r.backupDir("b"), c2.String())); !os.IsNotExist(err) {
		t.Fatalf("the emptied chain's directory is still there: %v", err)
	}
}
