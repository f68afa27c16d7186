package assertion

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/snapcore/snapd/asserts"
)

// deviceRequest is a serial-request signed through snapd by priv.
func deviceRequest(t testing.TB, priv *rsa.PrivateKey) *asserts.SerialRequest {
	t.Helper()
	key, err := asserts.EncodePublicKey(asserts.RSAPublicKey(&priv.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	a, err := asserts.SignWithoutAuthority(asserts.SerialRequestType, map[string]any{
		"brand-id": "brand-x", "model": "foo-1", "request-id": "REQ1", "device-key": string(key),
	}, []byte("HW: details"), asserts.RSAPrivateKey(priv))
	if err != nil {
		t.Fatal(err)
	}
	return a.(*asserts.SerialRequest)
}

// snapdDecides is snapd's own verdict on content and signature under the
// request's headers and the public key priv.
func snapdDecides(t testing.TB, req *asserts.SerialRequest, content, sig []byte, pub *rsa.PublicKey) error {
	t.Helper()
	a, err := asserts.Assemble(req.Headers(), req.Body(), content, sig)
	if err != nil {
		return err
	}
	return asserts.SignatureCheck(a, asserts.RSAPublicKey(pub))
}

func encodeV1(packet []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(append([]byte{0x1}, packet...)))
}

// TestDeviceSignatureAsSnapd checks the fast path against snapd's
// SignatureCheck: it must take the keys snapd makes (RSA-2048 and 4096)
// and accept or refuse exactly when snapd does, over the valid signature,
// every single-bit change of the signature packet, changed content, the
// other header formats, trailing data and another key. A key it does not
// cover (RSA-1024 here) goes to snapd.
func TestDeviceSignatureAsSnapd(t *testing.T) {
	for _, bits := range []int{1024, 2048, 4096} {
		priv, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		other, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		req := deviceRequest(t, priv)
		content, sig := req.Signature()
		keyText := []byte(req.HeaderString("device-key"))
		otherKey, err := asserts.EncodePublicKey(asserts.RSAPublicKey(&other.PublicKey))
		if err != nil {
			t.Fatal(err)
		}

		err = fastRSACheck(content, sig, keyText)
		switch {
		case bits < 2048 && !errors.Is(err, errNoFastPath):
			t.Fatalf("RSA-%d: fast path took a key it does not cover: %v", bits, err)
		case bits >= 2048 && err != nil:
			t.Fatalf("RSA-%d: a valid signature is refused: %v", bits, err)
		}
		if err := checkDeviceSignature(req); err != nil {
			t.Fatalf("RSA-%d: checkDeviceSignature refused a valid request: %v", bits, err)
		}

		fast, refused := 0, 0
		agree := func(what string, content, sig, keyText []byte, pub *rsa.PublicKey) {
			t.Helper()
			got := fastRSACheck(content, sig, keyText)
			if errors.Is(got, errNoFastPath) {
				return
			}
			fast++
			want := snapdDecides(t, req, content, sig, pub)
			if (got == nil) != (want == nil) {
				t.Errorf("RSA-%d, %s: fast path says %v, snapd %v", bits, what, got, want)
			}
			if got != nil {
				refused++
			}
		}
		raw, err := base64.StdEncoding.DecodeString(string(sig))
		if err != nil {
			t.Fatal(err)
		}
		pkt := raw[1:]
		for i := range pkt {
			for b := 0; b < 8; b++ {
				bad := append([]byte(nil), pkt...)
				bad[i] ^= 1 << b
				agree("bit flip", content, encodeV1(bad), keyText, &priv.PublicKey)
			}
		}
		for _, pos := range []int{0, len(content) / 2, len(content) - 1} {
			bad := append([]byte(nil), content...)
			bad[pos] ^= 0x20
			agree("changed content", bad, sig, keyText, &priv.PublicKey)
		}
		agree("another key", content, sig, otherKey, &other.PublicKey)
		agree("trailing byte", content, encodeV1(append(append([]byte(nil), pkt...), 0)), keyText, &priv.PublicKey)
		agree("truncated", content, encodeV1(pkt[:len(pkt)-1]), keyText, &priv.PublicKey)

		// The same packet under the old header format and the new one's
		// five-byte length: both are valid OpenPGP, and both decide alike.
		body, ok := packetBody(pkt, 2)
		if !ok {
			t.Fatalf("RSA-%d: snapd's signature packet not walked", bits)
		}
		old := binary.BigEndian.AppendUint16([]byte{0x80 | 2<<2 | 1}, uint16(len(body)))
		long := binary.BigEndian.AppendUint32([]byte{0xc0 | 2, 0xff}, uint32(len(body)))
		for name, hdr := range map[string][]byte{"old format": old, "five-byte length": long} {
			p := append(hdr, body...)
			if bits >= 2048 {
				if err := fastRSACheck(content, encodeV1(p), keyText); err != nil {
					t.Errorf("RSA-%d, %s: refused: %v", bits, name, err)
				}
			}
			agree(name, content, encodeV1(p), keyText, &priv.PublicKey)
			bad := append([]byte(nil), p...)
			bad[len(bad)-1] ^= 1
			agree(name+", bit flip", content, encodeV1(bad), keyText, &priv.PublicKey)
		}
		if bits >= 2048 && (fast < 8*len(pkt)/2 || refused == 0) {
			t.Errorf("RSA-%d: only %d of the variants took the fast path (%d refused)", bits, fast, refused)
		}
		t.Logf("RSA-%d: %d variants decided by the fast path, %d of them refused", bits, fast, refused)
	}
}

// FuzzDeviceSignature changes the signature packet of a valid
// serial-request at will: whatever the fast path decides, snapd decides
// the same.
func FuzzDeviceSignature(f *testing.F) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	req := deviceRequest(f, priv)
	content, sig := req.Signature()
	keyText := []byte(req.HeaderString("device-key"))
	raw, err := base64.StdEncoding.DecodeString(string(sig))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw[1:])
	f.Add(raw[1 : len(raw)-3])
	f.Fuzz(func(t *testing.T, pkt []byte) {
		s := encodeV1(pkt)
		got := fastRSACheck(content, s, keyText)
		if errors.Is(got, errNoFastPath) {
			return
		}
		want := snapdDecides(t, req, content, s, &priv.PublicKey)
		if (got == nil) != (want == nil) {
			t.Fatalf("fast path says %v, snapd %v", got, want)
		}
	})
}

// BenchmarkDeviceSignature compares the fast path with snapd's check on an
// RSA-4096 device key.
func BenchmarkDeviceSignature(b *testing.B) {
	priv, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		b.Fatal(err)
	}
	req := deviceRequest(b, priv)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if err := checkDeviceSignature(req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("snapd", func(b *testing.B) {
		for b.Loop() {
			if err := asserts.SignatureCheck(req, req.DeviceKey()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
