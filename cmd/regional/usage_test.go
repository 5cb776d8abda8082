package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestEveryCommandUsage: every command and group answers --help on stdout
// with exit 0, refuses an unknown flag and a missing required flag with
// exit 2 and a message on stderr, before touching any database.
func TestEveryCommandUsage(t *testing.T) {
	c := newCLI(t)
	// missing names, for each command, the required flag its args leave out.
	missing := map[string]struct {
		args []string
		flag string
	}{
		"users add":             {[]string{"--region", "eu", "--password-stdin"}, "--username"},
		"users delete":          {[]string{"--region", "eu"}, "--username"},
		"clients delete":        {[]string{"--region", "eu"}, "--client-id"},
		"clients rotate-secret": {[]string{"--region", "eu"}, "--client-id"},
		"passkeys list":         {[]string{"--region", "eu"}, "--username"},
		"passkeys remove":       {[]string{"--region", "eu", "--flagged"}, "--username"},
	}
	for _, cmd := range program.Commands {
		words := strings.Fields(cmd.Name)
		t.Run(cmd.Name+"/help", func(t *testing.T) {
			code, out, errs := c.run("", append(words, "--help")...)
			if code != 0 || !strings.Contains(out, "usage: regional "+cmd.Name) || !strings.Contains(out, "-region") || errs != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
			}
		})
		t.Run(cmd.Name+"/bad flag", func(t *testing.T) {
			code, out, errs := c.run("", append(words, "--region", "eu", "--no-such-flag")...)
			if code != 2 || !strings.Contains(errs, "no-such-flag") || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
			}
		})
		t.Run(cmd.Name+"/missing --region", func(t *testing.T) {
			code, out, errs := c.run("", words...)
			if code != 2 || !strings.Contains(errs, "regional "+cmd.Name+": --region is required") || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
			}
		})
		if m, ok := missing[cmd.Name]; ok {
			t.Run(cmd.Name+"/missing "+m.flag, func(t *testing.T) {
				code, out, errs := c.run("pw-123456789\n", append(words, m.args...)...)
				if code != 2 || !strings.Contains(errs, m.flag) || out != "" {
					t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
				}
			})
		}
	}
	for _, group := range []string{"users", "clients", "keys"} {
		for _, args := range [][]string{{group}, {group, "--help"}, {"help", group}} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var out, errs bytes.Buffer
				code := run(context.Background(), args, strings.NewReader(""), &out, &errs)
				if code != 0 || !strings.Contains(out.String(), "regional "+group+" <command>") || !strings.Contains(out.String(), group+" list") || errs.Len() != 0 {
					t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errs.String())
				}
			})
		}
	}
}

// TestHelpNamesEverySecret: `regional --help` names every secret's config
// key and its environment variable (the cookie key was once settable only
// by an undocumented variable).
func TestHelpNamesEverySecret(t *testing.T) {
	var out, errs bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, strings.NewReader(""), &out, &errs); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs.String())
	}
	for _, want := range []string{"federation.routing_key_file", "regions[].cookie_key_file", "MERIDIAN_COOKIE_KEY_FILE",
		"MERIDIAN_REGIONS_0_COOKIE_KEY_FILE", "regions[].key_encryption_key_file", "regions[].federation_key_file",
		"regions[].registration_token_file", "hub.key_file", "federation.production"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
}
