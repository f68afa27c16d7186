package store

import (
	"database/sql"
	"sync"
)

// maxCachedStmts bounds the statement cache. The store's statements are
// fixed strings plus the few shapes the signing-log filter builds, far
// fewer than this; a query beyond the bound is simply not cached.
const maxCachedStmts = 256

// stmtCache keeps one prepared statement per query text. SQLite spends
// about as long parsing a short statement as running it, and the serial
// path runs a dozen statements per request; database/sql prepares a cached
// statement once on each pooled connection and reuses it inside
// transactions (Tx.Stmt). pgx caches prepared statements per connection by
// itself, so PostgreSQL stores have no stmtCache.
type stmtCache struct {
	db *sql.DB
	mu sync.RWMutex
	m  map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, m: make(map[string]*sql.Stmt)}
}

// get returns the prepared statement for q, or nil when q is not cached
// (no cache, cache full, or preparing failed: the caller then runs q
// directly and reports its error).
func (c *stmtCache) get(q string) *sql.Stmt {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	st := c.m[q]
	c.mu.RUnlock()
	if st != nil {
		return st
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.m[q]; st != nil {
		return st
	}
	if len(c.m) >= maxCachedStmts {
		return nil
	}
	st, err := c.db.Prepare(q)
	if err != nil {
		return nil
	}
	c.m[q] = st
	return st
}

func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.m {
		st.Close()
		delete(c.m, q)
	}
}

func (t *Tx) exec(q string, args ...any) (sql.Result, error) {
	if st := t.stmts.get(q); st != nil {
		return t.tx.Stmt(st).Exec(args...)
	}
	return t.tx.Exec(q, args...)
}

func (t *Tx) queryRow(q string, args ...any) *sql.Row {
	if st := t.stmts.get(q); st != nil {
		return t.tx.Stmt(st).QueryRow(args...)
	}
	return t.tx.QueryRow(q, args...)
}

func (t *Tx) query(q string, args ...any) (*sql.Rows, error) {
	if st := t.stmts.get(q); st != nil {
		return t.tx.Stmt(st).Query(args...)
	}
	return t.tx.Query(q, args...)
}
