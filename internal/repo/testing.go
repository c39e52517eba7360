package repo

// WriteJournalForTest writes a key table journal as RewriteKeyTable does
// before touching the file, so tests can stage a crash after that step.
func WriteJournalForTest(path string, off int64, section []byte) error {
	return writeJournal(path+journalExt, off, section)
}
