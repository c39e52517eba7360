package agent

import (
	"fmt"
	"sync"
	"time"
)

// notes keeps what crash recovery did to the backups of one repository
// (partial files removed, key table journals replayed, cut-off transfers
// ended) until the controller takes them into its next session's record.
// They are also logged when they happen; these are for `session show`.
type notes struct {
	mu sync.Mutex
	m  map[string][]string
}

// maxNotes bounds what is kept per backup if no controller asks.
const maxNotes = 64

// Note records what recovery did to a backup of the repository.
func (r *Repository) Note(backup, format string, args ...any) {
	msg := time.Now().UTC().Format(time.RFC3339) + " " + fmt.Sprintf(format, args...)
	r.notes.mu.Lock()
	defer r.notes.mu.Unlock()
	if r.notes.m == nil {
		r.notes.m = map[string][]string{}
	}
	l := append(r.notes.m[backup], msg)
	if len(l) > maxNotes {
		l = append([]string{fmt.Sprintf("(%d older notes dropped)", len(l)-maxNotes+1)}, l[len(l)-maxNotes+1:]...)
	}
	r.notes.m[backup] = l
}

// TakeNotes returns and forgets the notes of a backup.
func (r *Repository) TakeNotes(backup string) []string {
	r.notes.mu.Lock()
	defer r.notes.mu.Unlock()
	l := r.notes.m[backup]
	delete(r.notes.m, backup)
	return l
}
