// Package faults is Meridian's fault and abuse suite: it kills regional
// nodes under load, stops regions, databases and links, and replays the
// RFC 9700 attack list through cross-region hops, asserting what a user or
// an operator would see. The tests live in this package's _test files
// (TestFault*, TestAbuse*; `make test-faults`); the package itself holds only
// the small in-process TCP proxy the link faults use. docs/reliability.md
// records every scenario with its observed figures.
package faults
