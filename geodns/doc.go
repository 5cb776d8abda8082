// Package geodns is Meridian's authoritative GeoDNS server. It serves one
// zone (e.g. id.localhost.) in which the global host apps use is steered to
// the nearest healthy region, while each region host, DR host, the hub host
// and the name servers answer with their own addresses.
//
// The pieces, in the order a query meets them:
//
//   - [ParseRequest] decodes a query from the wire, checking the EDNS Client
//     Subnet option strictly (RFC 7871 section 6) so a malformed one is
//     answered with FORMERR.
//   - [Zone.Answer] is the decision, a pure function of the query, the
//     client's address and a health [Snapshot]; a [Zone] is a compiled
//     [Config].
//   - [Checker] polls /readyz at every address of each region and DR site,
//     each on its own, with hysteresis; latches a region failed over to its
//     DR site until an operator fails it back ([Checker.Failback], kept in
//     Config.StateFile across restarts); and publishes snapshots by atomic
//     pointer swap; readers take no lock.
//   - [Server] ties them to UDP and TCP sockets, limits the UDP response
//     rate per client subnet and records OpenTelemetry metrics.
//
// # Steering
//
// The client is the ECS address when the query carries ECS with a non-zero
// source prefix, else the transport's source address; either is cut to /24
// (IPv4) or /56 (IPv6) and matched against Config.Subnets, longest prefix
// first; nothing matching means Config.DefaultRegion. A site answers with
// its addresses that are up; it is down only when none is. A region answers
// with its primary, or with its DR site once failed over (no primary address
// up and a DR address up; it stays there until an operator fails it back),
// so users stay in their region; a region whose answering site is down is
// passed over for the first healthy region of its Proximity list, then the
// default region and its Proximity list. With every region down the matched region answers
// anyway: the global host is never answered empty. A region lacking
// addresses of the asked type (say, no IPv6) is skipped the same way.
//
// # ECS scope
//
// Replies to ECS queries echo the option with a SCOPE PREFIX-LENGTH that is
// true for the answer: the matched route's length, raised until no more
// specific route overlaps the scope. Reporting just the matched route's
// length would let a resolver cache, say, a 10.0.0.0/8 answer for clients in
// a more specific 10.1.0.0/16 route; reporting 0 for default-region answers
// would let it serve that default answer to every client. The scope is 0
// only when nothing finer exists: names that are not steered, a /0 source
// prefix (the client asked not to be located; the transport source then
// steers, as without ECS) and families with no route at all.
//
// # Rate limiting
//
// Over UDP, each client /24 or /56 has a token bucket
// (RateLimitConfig.ResponsesPerSecond, Burst). Over the limit, one reply in
// Slip (default 2) is sent as an empty TC=1 reply, so a genuine client
// retries over TCP, and the rest are dropped, as BIND's RRL "slip" does: a
// reflection attack gains nothing, a real client is slowed but not cut off.
// TCP is never limited. Buckets sit in a fixed table indexed by a seeded
// hash, so memory stays bounded under a flood of forged sources.
//
// # Not supported
//
// MaxMind databases (dns.mmdb, Config.MMDBPath): no pure-Go reader is
// available to this module, so a non-empty path fails validation. Also absent: DNSSEC, zone
// transfers (AXFR/IXFR are REFUSED), dynamic updates and NOTIFY (NOTIMP),
// DNS cookies (the option is ignored), TSIG, and wildcard names.
package geodns
