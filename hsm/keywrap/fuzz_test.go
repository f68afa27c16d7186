package keywrap

import (
	"bytes"
	"testing"
)

// FuzzUnwrapPad feeds arbitrary blobs to the RFC 5649 unwrap: it must
// never panic, and anything it accepts must wrap back to the same blob.
func FuzzUnwrapPad(f *testing.F) {
	kek := bytes.Repeat([]byte{7}, 32)
	good, _ := WrapPad(kek, []byte("a PKCS#8 key would be here"))
	f.Add(good)
	f.Add(good[:16])
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xa6}, 24))
	f.Fuzz(func(t *testing.T, blob []byte) {
		pt, err := UnwrapPad(kek, blob)
		if err != nil {
			return
		}
		again, err := WrapPad(kek, pt)
		if err != nil || !bytes.Equal(again, blob) {
			t.Fatalf("accepted a blob that does not wrap back to itself")
		}
	})
}
