// Package hsm is keyrack's only door to the PKCS#11 token that holds the
// signing keys. Nothing else in keyrack loads a PKCS#11 module.
//
// # Ownership
//
// A Module owns the loaded library and with it the process-wide PKCS#11
// state: C_Initialize/C_Finalize, the login (PKCS#11 login state belongs to
// the process, not to a session) and every session. Only one Module per
// library path may be open in a process, because a second owner could log
// out or finalize under the first one's feet.
//
// # Concurrency
//
// A PKCS#11 session runs one operation at a time, and on the tokens we
// measured one session shared behind a mutex stays at single-core speed
// however many callers queue on it. The Module therefore keeps a pool with
// one session per worker (default: the number of CPUs); a caller borrows a
// session for one operation and gives it back. Waiting for a session is
// bounded by Config.AcquireTimeout and by the caller's context, so an
// overloaded token turns into ErrBusy instead of an unbounded queue.
//
// A separate, long-lived "anchor" session carries the login. It is never
// lent out, so recycling worker sessions never logs the process out.
//
// With Config.IdleSigning the signing calls themselves run on one
// dedicated thread per session in SCHED_IDLE, for software tokens whose
// arithmetic shares the CPUs with the rest of the process (idle.go).
//
// # Recovery
//
// Object and session handles die when the token is logged out, finalized,
// re-initialized or unplugged, and they do not come back by logging in
// again. Every operation runs under a read lock and records the module's
// generation. When an operation fails with a code that means "the token
// lost our state" (see needsRecovery), the caller takes the write lock,
// closes every session, re-initializes the library if needed, finds the
// token again by label or serial (never by slot number: slots move), logs
// in, and bumps the generation. Sessions and cached key handles carry the
// generation they were made in and are re-made lazily, keys being found
// again by CKA_ID. The failed operation is retried once.
//
// If the token cannot be brought back, the Module is marked down and every
// operation fails fast with ErrTokenUnavailable; a new attempt is made at
// most once per Config.RetryInterval, so a dead token costs callers
// microseconds, not a hang, and a returning token is picked up without a
// restart. A wrong PIN is never retried: HSMs lock the user after a few
// failures, so ErrPINIncorrect sticks until the Module is reopened.
//
// # Secrets
//
// PINs are read from a file, an environment variable or a systemd
// credential at each login and never kept; no error text carries a PIN.
// Private keys are created sensitive and non-extractable and are used only
// through their handles.
//
// It imports nothing of keyrack's. keyrackd opens the Module and hands it to
// the core (package appliance); the HTTP API and the officers' CLI never
// link it.
package hsm
