// Package device plays a device registering with the appliance the way
// snapd's device manager does (request-id, then a serial-request signed by
// the device key with the model assertion), for demos, end-to-end checks
// and load generation. It uses snapd's own asserts package to make and
// check what a device makes and checks.
//
// It imports nothing of keyrack's, so the officers' CLI (keyrack device
// register) and the benchmark can both link it.
package device

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/snapcore/snapd/asserts"
)

// Device is a simulated device.
type Device struct {
	Key   asserts.PrivateKey
	Brand string
	Model string
	// ModelAssertion is the device's model, as in its image.
	ModelAssertion []byte
}

// New makes a device with a fresh RSA key of bits (snapd uses 4096).
func New(brand, model string, bits int) (*Device, error) {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, err
	}
	return &Device{Key: asserts.RSAPrivateKey(k), Brand: brand, Model: model}, nil
}

// Client talks to an appliance's device service as snapd would.
type Client struct {
	// URL is the device-service URL, ending in /v1/.
	URL    string
	APIKey string
	HTTP   *http.Client
}

func (c *Client) post(ctx context.Context, path, ctype string, body []byte, hdr map[string]string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.URL, "/")+"/"+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("api-key", c.APIKey)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, resp.Header, raw, err
}

// Error is an answer other than success, with the appliance's message.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message) }

func answerError(status int, raw []byte) error {
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &eb) == nil && eb.Error.Message != "" {
		return &Error{status, eb.Error.Code, eb.Error.Message}
	}
	return &Error{status, "unexpected", strings.TrimSpace(string(raw))}
}

// RequestID asks for a request-id.
func (c *Client) RequestID(ctx context.Context) (string, error) {
	status, _, raw, err := c.post(ctx, "request-id", "", nil, nil)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", answerError(status, raw)
	}
	var v struct {
		RequestID string `json:"request-id"`
	}
	if err := json.Unmarshal(raw, &v); err != nil || v.RequestID == "" {
		return "", fmt.Errorf("request-id answer: %q", raw)
	}
	return v.RequestID, nil
}

// SignModel asks the appliance for a signature of the model template
// officers approved for model, of the client's brand (a dev convenience:
// a real device carries the model from its image).
func (c *Client) SignModel(ctx context.Context, model string) ([]byte, error) {
	b, _ := json.Marshal(map[string]any{"model": model})
	status, _, raw, err := c.post(ctx, "model", "application/json", b, nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, answerError(status, raw)
	}
	return raw, nil
}

// SerialRequest makes the device's serial-request for requestID; serial
// may be empty when the appliance assigns serials.
func (d *Device) SerialRequest(requestID, serial string, body []byte) ([]byte, error) {
	enc, err := asserts.EncodePublicKey(d.Key.PublicKey())
	if err != nil {
		return nil, err
	}
	h := map[string]any{"brand-id": d.Brand, "model": d.Model, "request-id": requestID, "device-key": string(enc)}
	if serial != "" {
		h["serial"] = serial
	}
	a, err := asserts.SignWithoutAuthority(asserts.SerialRequestType, h, body, d.Key)
	if err != nil {
		return nil, err
	}
	return asserts.Encode(a), nil
}

// Stream is the body of a serial request: serial-request then model.
func (d *Device) Stream(serialRequest []byte) []byte {
	var b bytes.Buffer
	b.Write(bytes.TrimRight(serialRequest, "\n"))
	b.WriteString("\n\n")
	b.Write(bytes.TrimRight(d.ModelAssertion, "\n"))
	b.WriteString("\n")
	return b.Bytes()
}

// PostSerial sends a prepared stream and returns the assertions answered.
func (c *Client) PostSerial(ctx context.Context, stream []byte) ([]asserts.Assertion, error) {
	status, hdr, raw, err := c.post(ctx, "serial", asserts.MediaType, stream, map[string]string{"Snap-Device-Capabilities": "serial-stream"})
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, answerError(status, raw)
	}
	if ct := hdr.Get("Content-Type"); ct != asserts.MediaType {
		return nil, fmt.Errorf("answer has Content-Type %q", ct)
	}
	dec := asserts.NewDecoder(bytes.NewReader(raw))
	var out []asserts.Assertion
	for {
		a, err := dec.Decode()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("answer is not an assertion stream: %w", err)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty answer")
	}
	return out, nil
}

// PostSerialStatus sends a prepared stream and returns only the status:
// for load generation, where decoding every answer would take CPU from
// the appliance measured on the same machine.
func (c *Client) PostSerialStatus(ctx context.Context, stream []byte) (int, error) {
	status, hdr, raw, err := c.post(ctx, "serial", asserts.MediaType, stream, nil)
	if err != nil {
		return 0, err
	}
	if status == http.StatusOK && (hdr.Get("Content-Type") != asserts.MediaType || !bytes.HasPrefix(raw, []byte("type: serial\n"))) {
		return status, fmt.Errorf("200 without a serial assertion")
	}
	return status, nil
}

// Register runs the whole exchange and returns the serial, checking that
// it is for this device.
func (c *Client) Register(ctx context.Context, d *Device, serial string) (*asserts.Serial, []asserts.Assertion, error) {
	rid, err := c.RequestID(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("request-id: %w", err)
	}
	req, err := d.SerialRequest(rid, serial, nil)
	if err != nil {
		return nil, nil, err
	}
	as, err := c.PostSerial(ctx, d.Stream(req))
	if err != nil {
		return nil, nil, fmt.Errorf("serial: %w", err)
	}
	s, ok := as[0].(*asserts.Serial)
	if !ok {
		return nil, nil, fmt.Errorf("answer starts with a %s, not a serial", as[0].Type().Name)
	}
	if s.DeviceKey().ID() != d.Key.PublicKey().ID() || s.Model() != d.Model || s.BrandID() != d.Brand {
		return nil, nil, fmt.Errorf("the serial is for another device or model")
	}
	return s, as, nil
}
