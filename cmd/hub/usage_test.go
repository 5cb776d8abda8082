package main

import (
	"strings"
	"testing"
)

// TestEveryCommandUsage: every command answers --help on stdout with exit
// 0 and refuses an unknown flag with exit 2; each command with a required
// flag refuses its absence with exit 2 naming the flag.
func TestEveryCommandUsage(t *testing.T) {
	s := newSetup(t, "")
	// required: for each command with required flags, the args that leave
	// one out and the flag the message names.
	required := map[string]struct {
		args []string
		flag string
	}{
		"import":          {[]string{"--file", "-"}, "--region"},
		"rotate-key":      {[]string{"--region", "us", "--file", "-"}, "--previous-key-file"},
		"finish-rotation": {[]string{"--file", "-"}, "--previous-key-file"},
		"dns-failback":    {nil, "--region"},
	}
	for _, cmd := range program.Commands {
		t.Run(cmd.Name+"/help", func(t *testing.T) {
			code, out, errs := runHub(t, "", cmd.Name, "--help")
			if code != 0 || !strings.Contains(out, "usage: hub "+cmd.Name) || !strings.Contains(out, "-config") || errs != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
			}
		})
		t.Run(cmd.Name+"/bad flag", func(t *testing.T) {
			code, out, errs := runHub(t, "", cmd.Name, "--config", s.config, "--no-such-flag")
			if code != 2 || !strings.Contains(errs, "no-such-flag") || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
			}
		})
		if r, ok := required[cmd.Name]; ok {
			t.Run(cmd.Name+"/missing "+r.flag, func(t *testing.T) {
				code, out, errs := runHub(t, "", append([]string{cmd.Name, "--config", s.config}, r.args...)...)
				if code != 2 || !strings.Contains(errs, "hub "+cmd.Name+": "+r.flag+" is required") || out != "" {
					t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
				}
			})
		}
	}
	if code, out, _ := runHub(t, "", "help", "import"); code != 0 || !strings.Contains(out, "-file") {
		t.Fatalf("help import: exit %d, stdout %q", code, out)
	}
}

// TestHelpNamesEverySecret: `hub --help` names every secret's config key
// and its environment variable.
func TestHelpNamesEverySecret(t *testing.T) {
	code, out, errs := runHub(t, "", "--help")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	for _, want := range []string{"federation.routing_key_file", "hub.key_file", "hub.federation_key_file",
		"hub.secret_file", "MERIDIAN_HUB_SECRET_FILE", "hub.previous_secret_file", "federation.production"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
}
