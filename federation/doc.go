// Package federation is the protocol regions and the hub speak to each
// other, shared by both and tied to neither: it imports no region or
// configuration package.
//
//   - identity.go is each party's own ES256 key (Keyring) and the
//     private_key_jwt client assertions made with it; credentials.go names
//     the federation clients (ids from the routing key, which never
//     authenticates anyone).
//   - RP is the OpenID Connect relying party a region (towards the hub or a
//     mesh peer) and the hub (towards a resident region) use: go-oidc and
//     x/oauth2, PKCE S256, state, nonce, exact issuer and RFC 9207 iss
//     checks.
//   - Pages renders the region-look-alike login pages (templates from
//     package loginpage).
//   - NewHTTPClient is the back-channel client that dials only the
//     federation's configured addresses.
//   - wire.go holds the machine-to-machine types: lookup-table changes a
//     region pushes to the hub and the user-key pages the hub reconciles
//     with.
//
// The regional side (the entry region's Federator, the outbox Pusher, the
// user-keys endpoint) is package region/federation; the hub is package hub.
package federation

import "errors"

// ErrUnavailable is wrapped when the hub or a resident region cannot be
// reached: the user sees UnavailableMessage and may try again.
var ErrUnavailable = errors.New("federation: unavailable")
