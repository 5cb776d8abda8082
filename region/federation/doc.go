// Package federation connects a regional node to the rest of the Meridian
// federation.
//
//   - Upstream implements region.Upstream: the identifier-first login of the
//     entry region sends a user who is not resident there to the hub (hub
//     topology) or straight to the resident region found in the lookup table
//     (mesh topology), as an OpenID Connect relying party (go-oidc and
//     x/oauth2, PKCE S256, state, nonce, exact issuer and RFC 9207 iss
//     checks), and takes back a verified identity.
//   - Pusher drains the region's user outbox to the hub's lookup table as
//     keyed hashes (the hub never receives a username on this path), and
//     UserKeysHandler lists the region's users as keyed hashes for the hub's
//     reconciliation.
//   - credentials.go derives every federation client's id and secret from
//     the federation routing key, so regions and hub agree on credentials
//     with no manual bootstrap.
//
// The package is shared by the hub (package hub), which uses the same
// relying party (RP), credential helpers and look-alike login pages.
package federation
