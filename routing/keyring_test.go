package routing_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/routing"
)

var regions = []string{"eu", "us", "ap"}

// ringKey is the key named by letter (a, b, c) with a use.
func ringKey(letter string, use routing.KeyUse) routing.RoutingKey {
	return routing.RoutingKey{Secret: secret(letter), Use: use}
}

func secret(letter string) []byte { return bytes.Repeat([]byte(letter), 32) }

func ring(t *testing.T, keys ...routing.RoutingKey) *routing.Codec {
	t.Helper()
	c, err := routing.NewKeyRing(regions, keys)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var allKinds = []routing.Kind{routing.KindClient, routing.KindCode, routing.KindRefresh, routing.KindAccess, routing.KindSession,
	routing.KindAuthRequest, routing.KindTokenID, routing.KindUser, routing.KindGroup}

// longLived are the kinds a retired key (UseClients) still verifies: public
// identifiers of registered clients and provisioned SCIM resources.
var longLived = map[routing.Kind]bool{routing.KindClient: true, routing.KindUser: true, routing.KindGroup: true}

// TestKeyRingRotationPhases follows the routing-key rotation of
// docs/operations.md: every node moves through the phases one at a time, so
// two adjacent phases run side by side. Whatever a node of one phase mints,
// a node of the other verifies; after the old key retires, every client_id
// it MACed (m1 from before the ring, m2 naming it) still verifies, while its
// short-lived artifacts do not.
func TestKeyRingRotationPhases(t *testing.T) {
	legacy, err := routing.NewCodec(regions, secret("a"))
	if err != nil {
		t.Fatal(err)
	}
	phases := []struct {
		name  string
		codec *routing.Codec
	}{
		{"0: routing_key_file = a (m1)", legacy},
		{"1: a signs, b verifies", ring(t, ringKey("a", routing.UseSign), ringKey("b", routing.UseVerify))},
		{"2: b signs, a verifies", ring(t, ringKey("b", routing.UseSign), ringKey("a", routing.UseVerify))},
		{"3: b signs, a retired (client_ids only)", ring(t, ringKey("b", routing.UseSign), ringKey("a", routing.UseClients))},
	}
	// Artifacts minted in each phase, by kind.
	minted := make([]map[routing.Kind]string, len(phases))
	for i, p := range phases {
		minted[i] = map[routing.Kind]string{}
		for _, k := range allKinds {
			a, err := p.codec.New(k, "us")
			if err != nil {
				t.Fatal(err)
			}
			minted[i][k] = a
		}
	}
	// Adjacent phases run side by side during a rollout: no call breaks.
	for i := 0; i+1 < len(phases); i++ {
		for _, pair := range [][2]int{{i, i + 1}, {i + 1, i}} {
			from, at := pair[0], pair[1]
			// Phase 3 comes after the longest artifact lifetime: only
			// artifacts of phases 2 and 3 are still alive then.
			if at == 3 && from < 2 {
				continue
			}
			for k, a := range minted[from] {
				if tag, err := phases[at].codec.VerifyKind(a, k); err != nil || tag.Region != "us" {
					t.Errorf("%s minted %s %s; %s: %v", phases[from].name, k, a, phases[at].name, err)
				}
			}
		}
	}
	// After retirement: every client_id ever registered and every SCIM
	// resource id still verifies, in phase 3 and after the next rotation
	// too; short-lived artifacts of a do not.
	next := ring(t, ringKey("c", routing.UseSign), ringKey("b", routing.UseVerify), ringKey("a", routing.UseClients))
	for _, retired := range []*routing.Codec{phases[3].codec, next} {
		for i := 0; i < 2; i++ {
			for _, k := range allKinds {
				if !longLived[k] {
					continue
				}
				if _, err := retired.VerifyKind(minted[i][k], k); err != nil {
					t.Errorf("%s %s from phase %d rejected after retirement: %v", k, minted[i][k], i, err)
				}
			}
			for _, k := range allKinds {
				if longLived[k] {
					continue
				}
				if _, err := retired.Verify(minted[i][k]); !errors.Is(err, routing.ErrBadMAC) {
					t.Errorf("%s %s from phase %d after retirement: %v, want ErrBadMAC", k, minted[i][k], i, err)
				}
			}
		}
	}
	// m2 names the key; m1 does not.
	b := routing.KeyID(secret("b"))
	if tag, _ := routing.Parse(minted[2][routing.KindAccess]); tag.KeyID != b || !strings.HasPrefix(minted[2][routing.KindAccess], "m2.at.us."+b+".") {
		t.Errorf("phase 2 artifact %s names key %q, want %s", minted[2][routing.KindAccess], tag.KeyID, b)
	}
	if tag, _ := routing.Parse(minted[0][routing.KindAccess]); tag.KeyID != "" {
		t.Errorf("m1 artifact names key %q", tag.KeyID)
	}
}

// flip returns another base64url character than c.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestKeyRingRejects(t *testing.T) {
	c := ring(t, ringKey("b", routing.UseSign), ringKey("a", routing.UseVerify))
	tok, _ := c.New(routing.KindAccess, "eu")
	a, b := "."+routing.KeyID(secret("a"))+".", "."+routing.KeyID(secret("b"))+"."
	// Renaming the key (to another key of the ring, or an unknown one),
	// downgrading to m1 or flipping a bit of the MAC fails.
	for name, forged := range map[string]string{
		"other key id":   strings.Replace(tok, b, a, 1),
		"unknown key id": strings.Replace(tok, b, ".0badcafe.", 1),
		"as m1":          "m1" + strings.Replace(tok[2:], b, ".", 1),
		"upper-case id":  strings.Replace(tok, b, strings.ToUpper(b), 1),
		"long key id":    strings.Replace(tok, b, b[:len(b)-1]+"00.", 1),
		"empty key id":   strings.Replace(tok, b, "..", 1),
		"flipped":        tok[:len(tok)-1] + flip(tok[len(tok)-1]),
	} {
		if _, err := c.Verify(forged); err == nil {
			t.Errorf("%s: %s verified", name, forged)
		}
	}
	for name, keys := range map[string][]routing.RoutingKey{
		"no signer":   {ringKey("a", routing.UseVerify)},
		"two signers": {ringKey("a", routing.UseSign), ringKey("b", routing.UseSign)},
		"duplicate":   {ringKey("a", routing.UseSign), ringKey("a", routing.UseVerify)},
		"bad use":     {ringKey("a", routing.UseSign), ringKey("b", "maybe")},
		"short key":   {{Secret: []byte("short"), Use: routing.UseSign}},
	} {
		if _, err := routing.NewKeyRing(regions, keys); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestKeyRingDeriveStable: the ids federation nodes derive for each other's
// clients do not change when a federation moves to a ring with the same key.
func TestKeyRingDeriveStable(t *testing.T) {
	legacy, _ := routing.NewCodec(regions, secret("a"))
	r := ring(t, ringKey("a", routing.UseSign), ringKey("b", routing.UseVerify))
	a, _ := legacy.Derive(routing.KindClient, "eu", "hub")
	b, _ := r.Derive(routing.KindClient, "eu", "hub")
	if a != b || legacy.DeriveSecret("x") != r.DeriveSecret("x") {
		t.Fatalf("derived ids differ: %s vs %s", a, b)
	}
	if got := r.DeriveSecrets("x"); len(got) != 2 || got[0] != r.DeriveSecret("x") {
		t.Fatalf("DeriveSecrets = %v", got)
	}
}

func TestKeyRingVerifyDoesNotAllocate(t *testing.T) {
	c := ring(t, ringKey("b", routing.UseSign), ringKey("a", routing.UseVerify))
	tok, _ := c.New(routing.KindAccess, "eu")
	if n := testing.AllocsPerRun(100, func() {
		if _, err := c.Verify(tok); err != nil {
			panic(fmt.Sprint(err))
		}
	}); n != 0 {
		t.Fatalf("Verify allocates %v times", n)
	}
}

// TestDeriveAllCoversEveryStep: the ids a node registers (DeriveAll under
// its ring) include the id any node of an adjacent rotation step names
// itself by (Derive under its signing key), and each verifies there.
func TestDeriveAllCoversEveryStep(t *testing.T) {
	steps := []*routing.Codec{
		ring(t, ringKey("a", routing.UseSign)),
		ring(t, ringKey("a", routing.UseSign), ringKey("b", routing.UseVerify)),
		ring(t, ringKey("b", routing.UseSign), ringKey("a", routing.UseVerify)),
		ring(t, ringKey("b", routing.UseSign), ringKey("a", routing.UseClients)),
	}
	for i := 0; i+1 < len(steps); i++ {
		for _, pair := range [][2]*routing.Codec{{steps[i], steps[i+1]}, {steps[i+1], steps[i]}} {
			registrar, caller := pair[0], pair[1]
			all, err := registrar.DeriveAll(routing.KindClient, "us", "hub")
			if err != nil {
				t.Fatal(err)
			}
			id, err := caller.Derive(routing.KindClient, "us", "hub")
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, a := range all {
				found = found || a == id
			}
			if !found {
				t.Fatalf("steps %d/%d: the caller's id %s is not among the registrar's %v", i, i+1, id, all)
			}
			if _, err := registrar.VerifyKind(id, routing.KindClient); err != nil {
				t.Fatalf("steps %d/%d: the caller's id does not verify at the registrar: %v", i, i+1, err)
			}
		}
	}
	if all, _ := steps[1].DeriveAll(routing.KindClient, "us", "hub"); len(all) != 2 {
		t.Fatalf("two keys, %d ids", len(all))
	}
	if _, err := steps[0].DeriveAll(routing.KindClient, "mars", "hub"); err == nil {
		t.Fatal("unknown region accepted")
	}
}
