package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/internal/cli"
)

// TestUsage: every command answers --help on stdout with exit 0, refuses a
// bad flag and a missing --admin with exit 2 and a message on stderr.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		code      int
		out, errs string
	}{
		{[]string{"--help"}, 0, "usage: geodns", ""},
		{[]string{"serve", "--help"}, 0, "-config", ""},
		{[]string{"failback", "--help"}, 0, "REGION", ""},
		{[]string{"state", "-h"}, 0, "-admin", ""},
		{[]string{"serve", "--nope"}, 2, "", "-nope"},
		{[]string{"--nope"}, 2, "", "-nope"},
		{[]string{"failback", "--nope"}, 2, "", "-nope"},
		{[]string{"state", "--nope"}, 2, "", "-nope"},
		{[]string{"failback", "eu"}, 2, "", "geodns failback: --admin is required"},
		{[]string{"failback", "--admin", "127.0.0.1:1"}, 2, "", "REGION"},
		{[]string{"state"}, 2, "", "geodns state: --admin is required"},
		{[]string{"serve", "--config", "testdata/none.yaml"}, 1, "", "geodns serve:"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errs bytes.Buffer
			code := program.Run(context.Background(), tc.args, cli.Stdio{In: strings.NewReader(""), Out: &out, Err: &errs})
			if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errs.String(), tc.errs) ||
				(tc.out == "") != (out.Len() == 0) {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errs.String())
			}
		})
	}
}
