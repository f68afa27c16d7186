// Package assertion makes signed snap assertions with keys that never leave
// a hardware token, and checks the assertions devices send in.
//
// # Why signing goes through crypto.Signer
//
// snapd's asserts package signs only with its own PrivateKey type, whose
// methods are unexported: the private key has to be in process memory. The
// appliance's brand keys live in a PKCS#11 token and must stay there. So
// this package assembles the assertion content itself, in snapd's canonical
// header order and encoding, and builds the OpenPGP v4 signature packet
// with golang.org/x/crypto/openpgp/packet around a crypto.Signer. The only
// private-key operation is one Sign(rand, SHA-512 digest, crypto.SHA512)
// call, which a token performs as CKM_RSA_PKCS over the DigestInfo. The
// tests prove that, for the same headers, key and creation time, the bytes
// are identical to what snapd itself produces.
//
// # Why every assertion is checked twice
//
// Before the token is asked for a signature, the assembled content is run
// through snapd's own decoder (asserts.Decode with a placeholder signature).
// Headers snapd would refuse are reported as ErrInvalidHeaders, naming the
// header, without spending a token operation or leaving a signature over
// content no device would accept.
//
// After signing, the complete assertion is decoded again and its signature
// verified with the signer's public key before it is returned. A token that
// signs with a different key than it claims, returns a corrupt signature, or
// an encoding drift after a snapd update then fails here (ErrSelfCheck) and
// never reaches a device, which would otherwise fail to seed or register
// with a message nobody at the factory can act on. The benchmarks show what
// this costs next to the RSA operation.
//
// # What is not here
//
// Policy (which client may ask for which model, which key signs what) and
// storage are the caller's. This package knows snap assertions only.
//
// It imports nothing of keyrack's (snapd's asserts and x/crypto's openpgp
// only): the token's key arrives as a crypto.Signer.
package assertion
