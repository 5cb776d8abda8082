package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// The hot inserts of token issuance. They run inside group commit batches
// (store.GroupCommit), many per transaction; parsing their SQL once per
// statement cost about as much as executing it, so they are prepared once on
// the writer connection and bound to each transaction.
const (
	insertAccessSQL  = `INSERT INTO access_tokens (` + accessCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	insertRefreshSQL = `INSERT INTO refresh_tokens (` + refreshCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
)

// prepareWrites prepares the hot inserts on the writer connection. It runs
// after Migrate (the tables must exist) and outside any transaction: the
// writer has a single connection, which a transaction would hold.
func (s *Store) prepareWrites(ctx context.Context) error {
	for _, q := range []string{insertAccessSQL, insertRefreshSQL} {
		if _, ok := s.wst.Load(q); ok {
			continue
		}
		st, err := s.w.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
		if _, loaded := s.wst.LoadOrStore(q, st); loaded {
			st.Close()
		}
	}
	return nil
}

// exec runs query in tx, through its prepared statement when there is one.
func (s *Store) exec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if st, ok := s.wst.Load(query); ok {
		return tx.StmtContext(ctx, st.(*sql.Stmt)).ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, query, args...)
}
