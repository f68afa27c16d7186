package keyfile

import (
	"testing"
)

// FuzzParse feeds arbitrary uploads to the key-file parser: it must never
// panic, and whatever it accepts is a consistent RSA key of the size asked.
func FuzzParse(f *testing.F) {
	f.Add([]byte("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQ\n-----END PGP PRIVATE KEY BLOCK-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Add([]byte{0x30, 0x82, 0x01, 0x00})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, info, err := Parse(data, 2048)
		if err != nil {
			return
		}
		if k.Validate() != nil || info.Bits < 2048 || k.N.BitLen() != info.Bits {
			t.Fatalf("accepted an inconsistent key (%d bits)", info.Bits)
		}
	})
}
