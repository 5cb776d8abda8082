// Package rawio gives a TCP connection whose reads and writes are raw
// system calls, for the hop path of a node (the router's persistent
// connections to other regions and the listener that serves calls off
// the connection).
//
// A Go read or write on a socket enters the system call through the
// runtime (entersyscall/exitsyscall). While a thread is inside, the
// runtime's monitor (sysmon) may take its processor away and hand it to
// another thread, and it polls every 20 µs for as long as it keeps finding
// such processors. On a machine where system calls are dear (~1 µs, a
// paravirtualized guest), a loaded hop spends about a tenth of its CPU in
// that monitor and the hand-offs it causes (docs/benchmarks.md, "Round 8").
// The sockets are non-blocking, so a read or write returns at once (data
// or EAGAIN); making it a raw system call, which keeps the processor,
// removes that cost. Waiting for a socket to become ready still parks the
// goroutine in the runtime's poller, with the connection's deadlines.
package rawio
