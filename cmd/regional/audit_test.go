package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
)

// TestAdminChangesAreAudited: every change an operator makes with the
// command leaves one admin.change audit record (JSON, with the region and
// the action) and never the password or the client secret.
func TestAdminChangesAreAudited(t *testing.T) {
	c := newCLI(t)
	if code, _, errs := c.run("", "migrate", "--region", "eu"); code != 0 {
		t.Fatalf("migrate: %d %s", code, errs)
	}
	const password = "s3cret-password"
	steps := []struct {
		stdin, action string
		args          []string
	}{
		{password + "\n", "user.created", []string{"users", "add", "--region", "eu", "--username", "ada", "--password-stdin"}},
		{"", "client.created", []string{"clients", "add", "--region", "eu", "--redirect-uri", "https://app.example/cb", "--json"}},
		{"", "user.deleted", []string{"users", "delete", "--region", "eu", "--username", "ada"}},
		{"", "signing_key.rotated", []string{"keys", "rotate", "--region", "eu"}},
	}
	for _, s := range steps {
		code, out, errs := c.run(s.stdin, s.args...)
		if code != 0 {
			t.Fatalf("%v: %d %s", s.args, code, errs)
		}
		var secret string
		if s.action == "client.created" {
			var m map[string]any
			_ = json.Unmarshal([]byte(out), &m)
			secret, _ = m["client_secret"].(string)
		}
		var records []map[string]any
		sc := bufio.NewScanner(strings.NewReader(errs))
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "audit" {
				records = append(records, rec)
			}
		}
		if len(records) != 1 || records[0]["event"] != "admin.change" || records[0]["action"] != s.action || records[0]["region"] != "eu" {
			t.Fatalf("%v: audit records %v, want one admin.change %s for eu", s.args, records, s.action)
		}
		if strings.Contains(errs, password) || (secret != "" && strings.Contains(errs, secret)) {
			t.Fatalf("%v: the audit record carries a secret: %s", s.args, errs)
		}
	}
}
