package store

// The ends of the two records, for exports that page through them: an
// export reads where a record ends when it begins and stops there, so it
// ends even while signatures keep arriving, and holds exactly the rows
// that were there when it began.

// LastLogID returns the id of the newest signing-log row (0 for none).
func (t *Tx) LastLogID() (int64, error) {
	var id int64
	err := t.queryRow(`SELECT COALESCE(MAX(id), 0) FROM signing_log`).Scan(&id)
	return id, err
}

// LastAuditSeq returns the number of the newest audit event (0 for none).
func (t *Tx) LastAuditSeq() (int64, error) {
	var seq int64
	err := t.queryRow(`SELECT COALESCE(MAX(seq), 0) FROM audit`).Scan(&seq)
	return seq, err
}
