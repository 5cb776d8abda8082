// Package hub is Meridian's federation hub: the identity broker between
// regions and the owner of the user→region lookup table.
//
// Towards the regions the Broker is an OpenID provider (zitadel/oidc op)
// whose clients are the regions ("region-<id>", each authenticated with
// private_key_jwt by its own region's federation key). A region that cannot sign a user in sends
// them to the hub's /authorize with login_hint; the hub resolves the
// username's keyed hash in the lookup table and, as a relying party
// (go-oidc, x/oauth2, PKCE, nonce, RFC 9207 iss), sends the user to the
// resident region, which authenticates them with its own session,
// password and TOTP. The hub verifies the resident region's ID token and
// answers the entry region with the resident claims plus home_region.
// Unknown usernames are sent to their decoy region (federation.DecoyRegion,
// the same from every entry), whose own login answers them as a wrong
// password after the same argon2id cost: the hub never tells whether a
// username exists. An entry region that is a name's decoy asks the hub
// (ResolvePath, by lookup key, answered known or not) and answers it
// itself.
//
// The hub also applies the regions' user outboxes to the lookup table
// (keyed hashes only, ChangesPath) and reconciles the table against the
// regions' user lists (Reconcile).
package hub
