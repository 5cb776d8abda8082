package region

// TokenCacheTTL is the revocation bound of introspection across a region.
const TokenCacheTTL = tokenCacheTTL
