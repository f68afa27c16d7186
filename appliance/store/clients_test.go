package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"
)

// TestClientKindsMigration: a store made before clients had kinds (schema
// 3) gets them when it is opened. A client with serial among its types is
// a device-service client afterwards, with serial only (a mixed client's
// key is the one gadgets carry, so public: it keeps registering devices
// and signs nothing else); one without serial is a signing client with
// the default limits. Both dialects.
func TestClientKindsMigration(t *testing.T) {
	ctx := context.Background()
	seed := func(t *testing.T, sdb *sql.DB, d dialect) {
		t.Helper()
		old := &DB{db: sdb, dialect: dialect{name: d.name, migrations: d.migrations[:3]}}
		if err := old.migrate(ctx); err != nil {
			t.Fatal(err)
		}
		for _, c := range [][2]string{{"line", `["serial"]`}, {"mixed", `["serial","model","system-user","preseed"]`}, {"erp", `["model","system-user"]`}} {
			if _, err := sdb.ExecContext(ctx, `INSERT INTO clients (id, name, brand, models, types, secret_hash, created_us) VALUES ($1, $1, 'brand-x', '["m-1","m-2"]', $2, $3, 1)`,
				c[0], c[1], []byte{1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(t *testing.T, db *DB) {
		t.Helper()
		want := map[string]struct {
			kind, limits string
			types        []string
		}{
			"line":  {"device-service", "", []string{"serial"}},
			"mixed": {"device-service", "", []string{"serial"}},
			"erp": {"signing", `{"models":["m-1","m-2"],"max-validity-days":365,"password":false,"ssh-keys":true,"serials-required":true}`,
				[]string{"model", "system-user"}},
		}
		if err := db.View(ctx, func(tx *Tx) error {
			for name, w := range want {
				c, err := tx.GetClientByName(name)
				if err != nil {
					return err
				}
				if c.Kind != w.kind || c.Limits != w.limits || !slices.Equal(c.Types, w.types) || c.CertSHA256 != "" {
					t.Errorf("%s after the migration: kind %q types %v limits %s", name, c.Kind, c.Types, c.Limits)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	drivers(t, func(t *testing.T, driver string) {
		path := filepath.Join(t.TempDir(), "keyrack.db")
		sdb, err := sql.Open(driver, "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		seed(t, sdb, sqliteDialect)
		sdb.Close()
		db, err := openSQLite(ctx, path, driver)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		check(t, db)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn, err := pg.NewDatabase()
		if err != nil {
			t.Fatal(err)
		}
		sdb, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		seed(t, sdb, postgresDialect)
		sdb.Close()
		db, err := OpenPostgres(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		check(t, db)
	})
}

// TestClientRecord: kind, certificate and limits are kept and read back;
// limits change for an active client only.
func TestClientRecord(t *testing.T) { backends(t, testClientRecord) }

func testClientRecord(t *testing.T, db *DB) {
	ctx := context.Background()
	c := Client{ID: "erp", Name: "erp", Brand: "brand-x", Models: []string{"m-1"}, Types: []string{"model"}, Kind: "signing",
		CertSHA256: "ab", Limits: `{"models":["m-1"]}`, SecretHash: []byte{1}}
	if err := db.Update(ctx, func(tx *Tx) error { return tx.InsertClient(c) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(ctx, func(tx *Tx) error { return tx.SetClientLimits("erp", `{"models":[]}`) }); err != nil {
		t.Fatal(err)
	}
	var got Client
	db.View(ctx, func(tx *Tx) (err error) { got, err = tx.GetClientByName("erp"); return err })
	if got.Kind != "signing" || got.CertSHA256 != "ab" || got.Limits != `{"models":[]}` {
		t.Fatalf("client read back: %+v", got)
	}
	if err := db.Update(ctx, func(tx *Tx) error {
		if err := tx.RevokeClient("erp"); err != nil {
			return err
		}
		return tx.SetClientLimits("erp", `{}`)
	}); err == nil {
		t.Fatal("changed the limits of a revoked client")
	}
}
