package hub_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"
	_ "modernc.org/sqlite"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/region"
)

// TestNoForeignPersonalDataAtEntry (issue 12, item 4): a us resident signs
// in to an eu application through the hub, the application refreshes its
// tokens and calls userinfo before and after. The ID tokens name the user
// by a subject bound to us and userinfo carries the claims, fetched from
// us; eu's whole database (every table, every column, as text) and eu's
// logs contain none of the user's claim values. On SQLite and PostgreSQL.
func TestNoForeignPersonalDataAtEntry(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			f := newFed(t, options{topology: federation.TopologyHub, postgres: backend == "postgres"})
			claims := map[string]string{"name": "Wilhelmina Quist", "given_name": "Wilhelmina", "family_name": "Quist",
				"email": "w.quist@example.org", "email_verified": "true", "phone_number": "+15550104477"}
			bob := f.addUser("us", "wquist.zz", bobPassword, claims)
			f.waitResolves("wquist.zz", "us")
			wantSub, err := region.FederatedSubject("us", bob.ID)
			if err != nil {
				t.Fatal(err)
			}
			a := f.newApp("eu", f.globalURL())
			a.conf.Scopes = append(a.conf.Scopes, oidc.ScopeOfflineAccess, "phone")
			b := f.newBrowser()
			fl := a.start()
			loc, _ := b.login(fl.url, "wquist.zz", bobPassword)
			s := a.finish(fl, loc)
			if s.idToken.Subject != wantSub || !slices.Contains(s.amr, "fed") {
				t.Fatalf("ID token sub %q amr %v, want %q with fed", s.idToken.Subject, s.amr, wantSub)
			}
			checkUserinfo(t, "first userinfo", s.userinfo, wantSub, claims)

			// Refresh: a new ID token and access token; userinfo again.
			ctx := context.WithValue(oidc.ClientContext(f.ctx, f.client), oauth2.HTTPClient, f.client)
			fl2 := a.start()
			loc2, _ := b.login(fl2.url, "wquist.zz", "")
			tok, err := a.conf.Exchange(ctx, loc2.Query().Get("code"), oauth2.VerifierOption(fl2.verifier))
			if err != nil || tok.RefreshToken == "" {
				t.Fatalf("code exchange: %v (refresh token %q)", err, tok.RefreshToken)
			}
			tok.Expiry = tok.Expiry.Add(-24 * 60 * 60 * 1e9) // force the refresh
			fresh, err := a.conf.TokenSource(ctx, tok).Token()
			if err != nil || fresh.RefreshToken == tok.RefreshToken {
				t.Fatalf("refresh: %v", err)
			}
			raw, _ := fresh.Extra("id_token").(string)
			idt, err := a.provider.Verifier(&oidc.Config{ClientID: a.conf.ClientID}).Verify(ctx, raw)
			if err != nil || idt.Subject != wantSub {
				t.Fatalf("refreshed ID token: %v, sub %q", err, idt.Subject)
			}
			ui, err := a.provider.UserInfo(ctx, oauth2.StaticTokenSource(fresh))
			if err != nil {
				t.Fatalf("userinfo after refresh: %v", err)
			}
			m := map[string]any{}
			_ = ui.Claims(&m)
			checkUserinfo(t, "userinfo after refresh", m, wantSub, claims)

			// Nothing of the user at rest in eu, nor in its logs.
			dump := dumpDatabase(t, f, "eu")
			if !strings.Contains(dump, bob.ID) {
				t.Fatalf("the dump of eu does not even hold the home subject; is it the right database?\n%s", dump)
			}
			values := []string{"wquist.zz", "Wilhelmina", "Quist", "w.quist@example.org", "15550104477"}
			for _, v := range values {
				if strings.Contains(strings.ToLower(dump), strings.ToLower(v)) {
					t.Errorf("eu's database holds the us user's %q", v)
				}
				if strings.Contains(strings.ToLower(f.logs["eu"].String()), strings.ToLower(v)) {
					t.Errorf("eu's logs hold the us user's %q", v)
				}
			}
			if t.Failed() {
				t.Logf("eu database:\n%s\neu logs:\n%s", dump, f.logs["eu"])
			}
		})
	}
}

func checkUserinfo(t *testing.T, what string, m map[string]any, sub string, claims map[string]string) {
	t.Helper()
	if m["sub"] != sub || m["preferred_username"] != "wquist.zz" || m["name"] != claims["name"] ||
		m["email"] != claims["email"] || m["email_verified"] != true || m["phone_number"] != claims["phone_number"] {
		t.Fatalf("%s = %v", what, m)
	}
}

// dumpDatabase renders every row of every table of region id's store as
// text, column by column.
func dumpDatabase(t *testing.T, f *fed, id string) string {
	t.Helper()
	var out strings.Builder
	if f.opts.postgres {
		c, err := pgx.Connect(f.ctx, f.dsn[id])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		rows, err := c.Query(f.ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(tables) < 5 {
			t.Fatalf("tables %v: %v", tables, err)
		}
		for _, tb := range tables {
			rows, err := c.Query(f.ctx, `SELECT row_to_json(x)::text FROM `+pgx.Identifier{tb}.Sanitize()+` x`)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&out, "== %s\n%s\n", tb, strings.Join(lines, "\n"))
		}
		return out.String()
	}
	db, err := sql.Open("sqlite", "file:"+f.dsn[id]+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	if len(tables) < 5 {
		t.Fatalf("tables %v", tables)
	}
	for _, tb := range tables {
		rows, err := db.Query(`SELECT * FROM "` + tb + `"`)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		fmt.Fprintf(&out, "== %s %v\n", tb, cols)
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				if b, ok := v.([]byte); ok {
					v = string(b)
				}
				fmt.Fprintf(&out, "%s=%v ", cols[i], v)
			}
			out.WriteString("\n")
		}
		rows.Close()
	}
	return out.String()
}
