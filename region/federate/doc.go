// Package federate connects a regional node to the rest of the Meridian
// federation, on top of the shared protocol in package federation.
//
//   - Login implements region.Federator: the identifier-first login of the
//     entry region sends a user who is not resident there to the hub (hub
//     topology) or straight to the resident region found in the lookup table
//     (mesh topology), as a federation.RP, and takes back a verified
//     identity.
//   - Pusher drains the region's user outbox to the hub's lookup table as
//     keyed hashes (the hub never receives a username on this path), and
//     UserKeysHandler lists the region's users as keyed hashes for the hub's
//     reconciliation.
//   - EnsureHubClient and EnsurePeerClients register the federation clients
//     (private_key_jwt, holding the calling party's public key) in the
//     region's store.
//   - NewMember builds all of the above from the configuration.
package federate
