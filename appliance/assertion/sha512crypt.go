package assertion

import (
	"crypto/rand"
	"crypto/sha512"
	"hash"
	"strconv"
	"strings"
)

// SHA-512 crypt ("$6$"), implemented from Ulrich Drepper's specification
// "Unix crypt using SHA-256 and SHA-512": the only password hash snapd
// accepts in a system-user assertion, and what the device's
// /etc/shadow gets verbatim.

const (
	cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	defaultRounds = 5000
	minRounds     = 1000
	maxRounds     = 999999999
	maxSaltLen    = 16
	hashLen       = 86 // 64 bytes in the crypt base64 alphabet
)

// SHA512Crypt hashes password. An empty salt means 16 random characters;
// a longer salt is cut to 16, as the specification says. rounds 0 means
// the default 5000, written without a rounds= field; other values are
// clamped to 1000..999999999 and written (snapd itself only accepts
// 5000 and up).
func SHA512Crypt(password, salt string, rounds int) (string, error) {
	if salt == "" {
		var err error
		if salt, err = randomSalt(); err != nil {
			return "", err
		}
	}
	if len(salt) > maxSaltLen {
		salt = salt[:maxSaltLen]
	}
	for i := 0; i < len(salt); i++ {
		if strings.IndexByte(cryptAlphabet, salt[i]) < 0 {
			return "", invalid("password salt may only use %s", cryptAlphabet)
		}
	}
	explicitRounds := rounds != 0
	switch {
	case rounds == 0:
		rounds = defaultRounds
	case rounds < minRounds:
		rounds = minRounds
	case rounds > maxRounds:
		rounds = maxRounds
	}
	sum := sha512crypt([]byte(password), []byte(salt), rounds)

	var out strings.Builder
	out.WriteString("$6$")
	if explicitRounds {
		out.WriteString("rounds=")
		out.WriteString(strconv.Itoa(rounds))
		out.WriteByte('$')
	}
	out.WriteString(salt)
	out.WriteByte('$')
	encodeCrypt64(&out, sum)
	return out.String(), nil
}

// randomSalt draws 16 characters uniformly: 64 divides 256, so taking a
// byte modulo 64 has no bias.
func randomSalt() (string, error) {
	b := make([]byte, maxSaltLen)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = cryptAlphabet[b[i]%64]
	}
	return string(b), nil
}

// sha512crypt is the specification's algorithm, steps 1 to 21.
func sha512crypt(pw, salt []byte, rounds int) []byte {
	// Digest B: password, salt, password.
	b := sha512.New()
	b.Write(pw)
	b.Write(salt)
	b.Write(pw)
	digestB := b.Sum(nil)

	// Digest A: password, salt, B stretched to the password's length,
	// then per bit of the length (LSB first) B for 1, password for 0.
	a := sha512.New()
	a.Write(pw)
	a.Write(salt)
	writeStretched(a, digestB, len(pw))
	for n := len(pw); n > 0; n >>= 1 {
		if n&1 == 1 {
			a.Write(digestB)
		} else {
			a.Write(pw)
		}
	}
	digestA := a.Sum(nil)

	// P: the password once per password byte, hashed, stretched to the
	// password's length.
	dp := sha512.New()
	for range pw {
		dp.Write(pw)
	}
	p := stretch(dp.Sum(nil), len(pw))

	// S: the salt 16+A[0] times, hashed, stretched to the salt's length.
	ds := sha512.New()
	for i := 0; i < 16+int(digestA[0]); i++ {
		ds.Write(salt)
	}
	s := stretch(ds.Sum(nil), len(salt))

	c := digestA
	h := sha512.New()
	for i := 0; i < rounds; i++ {
		h.Reset()
		if i%2 == 1 {
			h.Write(p)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(s)
		}
		if i%7 != 0 {
			h.Write(p)
		}
		if i%2 == 1 {
			h.Write(c)
		} else {
			h.Write(p)
		}
		c = h.Sum(c[:0])
	}
	clear(p)
	return c
}

// writeStretched writes n bytes of d repeated.
func writeStretched(h hash.Hash, d []byte, n int) {
	for ; n > len(d); n -= len(d) {
		h.Write(d)
	}
	h.Write(d[:n])
}

func stretch(d []byte, n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n {
		out = append(out, d[:min(len(d), n-len(out))]...)
	}
	return out
}

// crypt64Order is the specification's byte order for SHA-512 output:
// 21 groups of three bytes, then the last byte alone.
var crypt64Order = [21][3]int{
	{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4},
	{47, 5, 26}, {6, 27, 48}, {28, 49, 7}, {50, 8, 29}, {9, 30, 51},
	{31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13}, {56, 14, 35},
	{15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19},
	{62, 20, 41},
}

// encodeCrypt64 writes the digest in crypt's base64: least significant
// six bits first, unlike RFC 4648.
func encodeCrypt64(out *strings.Builder, sum []byte) {
	put := func(v uint32, n int) {
		for ; n > 0; n-- {
			out.WriteByte(cryptAlphabet[v&0x3f])
			v >>= 6
		}
	}
	for _, g := range crypt64Order {
		put(uint32(sum[g[0]])<<16|uint32(sum[g[1]])<<8|uint32(sum[g[2]]), 4)
	}
	put(uint32(sum[63]), 2)
}

// checkPasswordHash accepts what snapd's system-user decoder accepts and
// what crypt(3) can verify: $6$[rounds=N$]salt$hash.
func checkPasswordHash(h string) error {
	rest, ok := strings.CutPrefix(h, "$6$")
	if !ok {
		return invalid("password hash must be SHA-512 crypt ($6$...)")
	}
	if r, ok := strings.CutPrefix(rest, "rounds="); ok {
		num, after, found := strings.Cut(r, "$")
		n, err := strconv.Atoi(num)
		if !found || err != nil || n < defaultRounds || n > maxRounds {
			return invalid("password hash rounds must be %d to %d", defaultRounds, maxRounds)
		}
		rest = after
	}
	salt, sum, found := strings.Cut(rest, "$")
	if !found || salt == "" || len(salt) > maxSaltLen || len(sum) != hashLen || !inAlphabet(salt) || !inAlphabet(sum) {
		return invalid("password hash must be $6$[rounds=N$]salt$hash with a 1-16 character salt and an 86 character hash")
	}
	return nil
}

func inAlphabet(s string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(cryptAlphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}
