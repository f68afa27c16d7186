package assertion

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"errors"

	"github.com/snapcore/snapd/asserts"
	"golang.org/x/crypto/openpgp/packet"
)

// A device's signature on its serial-request is checked once per serial,
// next to the token's signature: through snapd (crypto/rsa) an RSA-4096
// check costs about 220 µs of CPU here, through verifySHA512 about 90. The
// fast path below covers what snapd makes (RSA keys, e = 65537, SHA-512)
// and decides exactly as snapd's SignatureCheck does: the signature packet
// is parsed by the same OpenPGP package, the hash covers the same trailer,
// the hash tag is checked, and the RSA check compares the whole PKCS #1
// v1.5 encoding. Anything else goes to snapd.

// errNoFastPath: the key or signature is of a kind only snapd checks.
var errNoFastPath = errors.New("not an RSA/SHA-512 signature the fast path checks")

// checkDeviceSignature checks that the serial-request is signed by the
// device key it carries.
func checkDeviceSignature(req *asserts.SerialRequest) error {
	content, sig := req.Signature()
	err := fastRSACheck(content, sig, []byte(req.HeaderString("device-key")))
	if !errors.Is(err, errNoFastPath) {
		return err
	}
	return asserts.SignatureCheck(req, req.DeviceKey())
}

// fastRSACheck checks that encodedSig (a snap assertion signature: base64
// of a format byte and an OpenPGP signature packet) is keyText's signature
// over content. keyText is an encoded public key as assertions carry it.
func fastRSACheck(content, encodedSig, keyText []byte) error {
	pub, err := decodeRSAKey(keyText)
	if err != nil {
		return err
	}
	raw, err := decodeV1Packet(encodedSig)
	if err != nil {
		return err
	}
	p, err := packet.Read(bytes.NewReader(raw))
	if err != nil {
		return errNoFastPath // snapd refuses it, with its own message
	}
	sig, ok := p.(*packet.Signature)
	if !ok || sig.PubKeyAlgo != packet.PubKeyAlgoRSA || sig.Hash != crypto.SHA512 {
		return errNoFastPath
	}
	mpi, tag, ok := signatureMPI(raw)
	if !ok || tag != sig.HashTag {
		return errNoFastPath
	}
	h := sha512.New()
	h.Write(content)
	h.Write(sig.HashSuffix)
	digest := h.Sum(nil)
	if digest[0] != sig.HashTag[0] || digest[1] != sig.HashTag[1] {
		return errBadSignature
	}
	k := (pub.N.BitLen() + 7) / 8
	if len(mpi) > k {
		return errBadSignature
	}
	padded := make([]byte, k)
	copy(padded[k-len(mpi):], mpi)
	return verifySHA512(pub, digest, padded)
}

// decodeRSAKey decodes an assertion's public key when it is an RSA key the
// fast path takes: at least 2048 bits, public exponent 65537.
func decodeRSAKey(keyText []byte) (*rsa.PublicKey, error) {
	raw, err := decodeV1Packet(keyText)
	if err != nil {
		return nil, err
	}
	p, err := packet.Read(bytes.NewReader(raw))
	if err != nil {
		return nil, errNoFastPath
	}
	pk, ok := p.(*packet.PublicKey)
	if !ok || pk.PubKeyAlgo != packet.PubKeyAlgoRSA {
		return nil, errNoFastPath
	}
	pub, ok := pk.PublicKey.(*rsa.PublicKey)
	if !ok || pub.E != 65537 || pub.N.BitLen() < 2048 {
		return nil, errNoFastPath
	}
	return pub, nil
}

// decodeV1Packet undoes an assertion's encoding of a key or signature:
// base64 (line breaks allowed) of format byte 0x1 and exactly one packet.
func decodeV1Packet(text []byte) ([]byte, error) {
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(buf, text)
	if err != nil || n < 2 || buf[0] != 0x1 {
		return nil, errNoFastPath
	}
	return buf[1:n], nil
}

// signatureMPI walks a whole OpenPGP v4 signature packet (RFC 4880,
// sections 4.2 and 5.2.3) and returns its hash tag and its one MPI, the
// RSA signature, which must end the packet. packet.Read has parsed it
// already; this only finds the bytes it keeps unexported.
func signatureMPI(p []byte) (mpi []byte, tag [2]byte, ok bool) {
	body, ok := packetBody(p, 2)
	if !ok || len(body) < 6 || body[0] != 4 {
		return nil, tag, false
	}
	rest := body[4:]
	for range 2 { // hashed, then unhashed subpackets
		if len(rest) < 2 {
			return nil, tag, false
		}
		n := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+n {
			return nil, tag, false
		}
		rest = rest[2+n:]
	}
	if len(rest) < 4 {
		return nil, tag, false
	}
	tag = [2]byte{rest[0], rest[1]}
	bits := int(binary.BigEndian.Uint16(rest[2:]))
	mpi = rest[4:]
	if bits == 0 || len(mpi) != (bits+7)/8 {
		return nil, tag, false
	}
	return mpi, tag, true
}

// packetBody returns the body of p, a single packet with the given tag,
// in the old or new header format with a definite length.
func packetBody(p []byte, wantTag byte) ([]byte, bool) {
	if len(p) < 2 || p[0]&0x80 == 0 {
		return nil, false
	}
	var tag byte
	var n, hdr int
	if p[0]&0x40 == 0 { // old format
		tag = (p[0] >> 2) & 0x0f
		switch p[0] & 3 {
		case 0:
			n, hdr = int(p[1]), 2
		case 1:
			if len(p) < 3 {
				return nil, false
			}
			n, hdr = int(binary.BigEndian.Uint16(p[1:])), 3
		case 2:
			if len(p) < 5 {
				return nil, false
			}
			n, hdr = int(binary.BigEndian.Uint32(p[1:])), 5
		default:
			return nil, false
		}
	} else {
		tag = p[0] & 0x3f
		switch l := p[1]; {
		case l < 192:
			n, hdr = int(l), 2
		case l < 224:
			if len(p) < 3 {
				return nil, false
			}
			n, hdr = (int(l)-192)<<8+int(p[2])+192, 3
		case l == 255:
			if len(p) < 6 {
				return nil, false
			}
			n, hdr = int(binary.BigEndian.Uint32(p[2:])), 6
		default: // partial lengths: not a single packet
			return nil, false
		}
	}
	if tag != wantTag || n < 0 || len(p)-hdr != n {
		return nil, false
	}
	return p[hdr:], true
}
