package assertion

import (
	"crypto/rand"
	"crypto/sha512"
	"fmt"
	"strconv"
	"strings"
)

// SHA-512 crypt ($6$), as specified by Ulrich Drepper's "Unix crypt using
// SHA-256 and SHA-512" (the format system-user passwords use).

const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// SHA512Crypt hashes password. An empty salt means 16 random characters;
// rounds 0 means the default 5000 (then no rounds= field is written).
func SHA512Crypt(password, salt string, rounds int) (string, error) {
	if salt == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		var sb strings.Builder
		for _, c := range b {
			sb.WriteByte(cryptAlphabet[int(c)%len(cryptAlphabet)])
		}
		salt = sb.String()
	}
	if len(salt) > 16 {
		salt = salt[:16]
	}
	if strings.ContainsAny(salt, "$:\n") {
		return "", fmt.Errorf("%w: bad salt", ErrInvalidHeaders)
	}
	custom := rounds != 0
	if rounds == 0 {
		rounds = 5000
	}
	if rounds < 1000 {
		rounds = 1000
	}
	if rounds > 999999999 {
		rounds = 999999999
	}
	p, s := []byte(password), []byte(salt)

	b := sha512.New()
	b.Write(p)
	b.Write(s)
	b.Write(p)
	sumB := b.Sum(nil)

	a := sha512.New()
	a.Write(p)
	a.Write(s)
	for i := len(p); i > 0; i -= 64 {
		a.Write(sumB[:min(i, 64)])
	}
	for i := len(p); i > 0; i >>= 1 {
		if i&1 != 0 {
			a.Write(sumB)
		} else {
			a.Write(p)
		}
	}
	sumA := a.Sum(nil)

	dp := sha512.New()
	for range len(p) {
		dp.Write(p)
	}
	sumDP := dp.Sum(nil)
	pSeq := make([]byte, 0, len(p))
	for i := len(p); i > 0; i -= 64 {
		pSeq = append(pSeq, sumDP[:min(i, 64)]...)
	}

	ds := sha512.New()
	for range 16 + int(sumA[0]) {
		ds.Write(s)
	}
	sumDS := ds.Sum(nil)
	sSeq := make([]byte, 0, len(s))
	for i := len(s); i > 0; i -= 64 {
		sSeq = append(sSeq, sumDS[:min(i, 64)]...)
	}

	c := sumA
	for i := 0; i < rounds; i++ {
		h := sha512.New()
		if i&1 != 0 {
			h.Write(pSeq)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(sSeq)
		}
		if i%7 != 0 {
			h.Write(pSeq)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(pSeq)
		}
		c = h.Sum(nil)
	}
	clear(pSeq)

	var out strings.Builder
	out.WriteString("$6$")
	if custom {
		out.WriteString("rounds=" + strconv.Itoa(rounds) + "$")
	}
	out.WriteString(salt)
	out.WriteByte('$')
	order := [][3]int{
		{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4}, {47, 5, 26}, {6, 27, 48},
		{28, 49, 7}, {50, 8, 29}, {9, 30, 51}, {31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13},
		{56, 14, 35}, {15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19}, {62, 20, 41},
	}
	for _, o := range order {
		v := uint(c[o[0]])<<16 | uint(c[o[1]])<<8 | uint(c[o[2]])
		for range 4 {
			out.WriteByte(cryptAlphabet[v&0x3f])
			v >>= 6
		}
	}
	v := uint(c[63])
	for range 2 {
		out.WriteByte(cryptAlphabet[v&0x3f])
		v >>= 6
	}
	return out.String(), nil
}
