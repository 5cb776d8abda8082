package postgres

// groupCommitWorkers is how many group commit transactions of token inserts
// a Store runs at once: while one batch waits for its commit (a round trip
// and the server's WAL flush) the next one fills.
const groupCommitWorkers = 2
