package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/telemetry"
)

// TestFenceAndPromote runs runbook step 4's manual fence: `regional fence`
// marks a site's database superseded and a node started on it is fenced;
// `regional promote` on a writable database claims the generation; a bad
// flag fails.
func TestFenceAndPromote(t *testing.T) {
	c := newCLI(t)
	if code, out, errs := c.run("", "promote", "--region", "eu"); code != 0 || !strings.Contains(out, "eu.id.localhost holds generation 1") {
		t.Fatalf("promote: %d %s %s", code, out, errs)
	}
	code, out, errs := c.run("", "fence", "--region", "eu", "--by-generation", "7", "--by-holder", "eu-dr.id.localhost")
	if code != 0 || !strings.Contains(out, "fenced by generation 7 (eu-dr.id.localhost)") {
		t.Fatalf("fence: %d %s %s", code, out, errs)
	}
	if code, _, _ := c.run("", "fence", "--region", "eu", "--by-generation", "x"); code == 0 {
		t.Fatal("fence with a bad flag succeeded")
	}
	cfg, err := config.Load(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tel, err := telemetry.New(ctx, telemetry.Config{Service: "test", LogLevel: "error"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(ctx, cfg, "eu", node.Options{}, tel)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.Role() != region.RoleFenced {
		t.Fatalf("a node on a fenced database: role %s", n.Role())
	}
}
