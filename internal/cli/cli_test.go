package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

func testProgram(ran *[]string) *Program {
	cmd := func(name, args string) Command {
		return Command{Name: name, Args: args, Summary: "does " + name, Setup: func(fs *flag.FlagSet) RunFunc {
			need := fs.String("need", "", "required flag")
			fail := fs.Bool("fail", false, "fail at run time")
			return func(_ context.Context, args []string, s Stdio) error {
				if *need == "" {
					return Usagef("--need is required")
				}
				if *fail {
					return errors.New("it broke")
				}
				*ran = append(*ran, strings.Join(append([]string{name}, args...), " "))
				return nil
			}
		}}
	}
	return &Program{Name: "prog", Usage: "usage: prog <command>\n", Commands: []Command{
		cmd("serve", ""), cmd("keys rotate", ""), cmd("keys list", ""), cmd("failback", "REGION"),
	}}
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		code      int
		out, errs string // substrings; "" = must be empty
		ran       string
	}{
		{"no arguments", nil, 0, "usage: prog", "", ""},
		{"help", []string{"help"}, 0, "usage: prog", "", ""},
		{"-h", []string{"-h"}, 0, "usage: prog", "", ""},
		{"--help", []string{"--help"}, 0, "usage: prog", "", ""},
		{"help of a command", []string{"help", "keys", "rotate"}, 0, "usage: prog keys rotate [flags]", "", ""},
		{"command --help", []string{"serve", "--help"}, 0, "-need", "", ""},
		{"command -h after flags", []string{"serve", "--need", "x", "-h"}, 0, "does serve", "", ""},
		{"two-word --help", []string{"keys", "rotate", "--help"}, 0, "usage: prog keys rotate [flags]", "", ""},
		{"group --help", []string{"keys", "--help"}, 0, "keys list", "", ""},
		{"bare group", []string{"keys"}, 0, "keys rotate", "", ""},
		{"group then flag", []string{"keys", "--need", "x"}, 2, "", "missing subcommand", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`, ""},
		{"unknown subcommand", []string{"keys", "frobnicate"}, 2, "", `unknown command "keys frobnicate"`, ""},
		{"bad flag", []string{"serve", "--nope"}, 2, "", "flag provided but not defined: -nope", ""},
		{"missing required flag", []string{"keys", "list"}, 2, "", "prog keys list: --need is required", ""},
		{"unexpected argument", []string{"serve", "--need", "x", "extra"}, 2, "", `unexpected argument "extra"`, ""},
		{"runtime error", []string{"serve", "--need", "x", "--fail"}, 1, "", "prog serve: it broke", ""},
		{"runs", []string{"keys", "rotate", "--need", "x"}, 0, "", "", "keys rotate"},
		{"positional arguments", []string{"failback", "--need", "x", "eu"}, 0, "", "", "failback eu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ran []string
			var out, errs bytes.Buffer
			code := testProgram(&ran).Run(context.Background(), tc.args, Stdio{In: strings.NewReader(""), Out: &out, Err: &errs})
			if code != tc.code {
				t.Errorf("exit %d, want %d (stdout %q, stderr %q)", code, tc.code, out.String(), errs.String())
			}
			check := func(what, got, want string) {
				if want == "" && got != "" || !strings.Contains(got, want) {
					t.Errorf("%s = %q, want it to contain %q", what, got, want)
				}
			}
			check("stdout", out.String(), tc.out)
			check("stderr", errs.String(), tc.errs)
			if got := strings.Join(ran, ","); got != tc.ran {
				t.Errorf("ran %q, want %q", got, tc.ran)
			}
		})
	}
}

func TestDefaultCommand(t *testing.T) {
	var ran []string
	p := testProgram(&ran)
	p.Default = "serve"
	var out, errs bytes.Buffer
	if code := p.Run(context.Background(), []string{"--need", "x"}, Stdio{Out: &out, Err: &errs}); code != 0 || strings.Join(ran, ",") != "serve" {
		t.Fatalf("flags only: exit %d, ran %q, stderr %q", code, ran, errs.String())
	}
	if code := p.Run(context.Background(), []string{"--help"}, Stdio{Out: &out, Err: &errs}); code != 0 || !strings.Contains(out.String(), "usage: prog") {
		t.Fatalf("--help: exit %d, stdout %q", code, out.String())
	}
}
