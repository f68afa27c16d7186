package appliance

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/keyrack/keyrack/appliance/store"
)

// Request-ids carry their own proof. The device-service API key is in
// every gadget image, so anyone can ask for request-ids at any rate: a
// request-id stored when issued would let the public key fill the store.
// Instead a request-id is its expiry (Unix milliseconds), 16 random bytes and a MAC over them
// and the API client's name, under a secret the appliances sharing a
// store share. Issuing one writes nothing; the store holds only the
// request-ids used (claimed by a serial request that passed every check
// before the store), each until it expires, which bounds it by the
// signing rate times devices.nonce_ttl.

const (
	requestIDKeySetting = "request_id_key"
	requestIDDomain     = "keyrack request-id v1\x00"
	requestIDRandom     = 16
	requestIDMAC        = 16 // truncated HMAC-SHA256: 128 bits against forgery
	requestIDBytes      = 8 + requestIDRandom + requestIDMAC
)

// Request-id errors, before the store is asked.
var (
	errRequestIDInvalid = errors.New("request-id not issued by this appliance to this API client")
	errRequestIDExpired = errors.New("request-id expired")
)

// ensureRequestIDKey returns the request-id MAC secret, making it on the
// first start of the first appliance on the store. Appliances starting
// together on one PostgreSQL store race to make it: the loser reads the
// winner's.
func ensureRequestIDKey(ctx context.Context, db *store.DB) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		var key []byte
		err := db.Update(ctx, func(tx *store.Tx) error {
			v, err := tx.Setting(requestIDKeySetting)
			if err == nil {
				key, err = hex.DecodeString(v)
				if err == nil && len(key) != 32 {
					err = fmt.Errorf("%d bytes, want 32", len(key))
				}
				if err != nil {
					return fmt.Errorf("setting %s: %w", requestIDKeySetting, err)
				}
				return nil
			}
			if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			key = make([]byte, 32)
			if _, err := rand.Read(key); err != nil {
				return err
			}
			if err := tx.SetSetting(requestIDKeySetting, hex.EncodeToString(key)); err != nil {
				return err
			}
			// The secret itself is never audited, only that it was made.
			_, err = tx.Audit("system", "request-id.key", requestIDKeySetting, "ok", nil)
			return err
		})
		if errors.Is(err, store.ErrExists) && attempt == 0 {
			continue
		}
		return key, err
	}
}

// requestIDMACOf is the MAC of a request-id's expiry and random part for
// an API client. The client's name is length-prefixed so that no two
// (client, payload) pairs hash alike.
func (a *Appliance) requestIDMACOf(client string, payload []byte) []byte {
	m := hmac.New(sha256.New, a.requestIDKey)
	m.Write([]byte(requestIDDomain))
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(client)))
	m.Write(n[:])
	m.Write([]byte(client))
	m.Write(payload)
	return m.Sum(nil)[:requestIDMAC]
}

// newRequestID makes a request-id for client, usable until expires.
func (a *Appliance) newRequestID(client string, expires time.Time) (string, error) {
	b := make([]byte, requestIDBytes)
	binary.BigEndian.PutUint64(b, uint64(expires.UnixMilli()))
	if _, err := rand.Read(b[8 : 8+requestIDRandom]); err != nil {
		return "", err
	}
	copy(b[8+requestIDRandom:], a.requestIDMACOf(client, b[:8+requestIDRandom]))
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// checkRequestID verifies a request-id presented by client and returns its
// expiry. It says nothing about whether it was used: the store decides
// that when the serial request claims it.
func (a *Appliance) checkRequestID(client, id string, now time.Time) (time.Time, error) {
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(b) != requestIDBytes {
		return time.Time{}, errRequestIDInvalid
	}
	if !hmac.Equal(b[8+requestIDRandom:], a.requestIDMACOf(client, b[:8+requestIDRandom])) {
		return time.Time{}, errRequestIDInvalid
	}
	expires := time.UnixMilli(int64(binary.BigEndian.Uint64(b)))
	if now.After(expires) {
		return time.Time{}, errRequestIDExpired
	}
	return expires, nil
}
