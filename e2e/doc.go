// Package e2e holds the tests that run Meridian the way a user does: the
// binaries built from this checkout, started by localfed from a config
// file, driven by a real browser (headless Chromium) and real DNS tools.
package e2e
