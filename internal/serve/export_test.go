package serve

// CloseGrace is closeGrace, for the package's external tests.
const CloseGrace = closeGrace
