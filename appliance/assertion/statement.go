package assertion

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/snapcore/snapd/asserts"
)

// Statement is the input of `snap sign`: a JSON object of an assertion's
// headers, with the body, if any, in the "body" pseudo-header.
type Statement struct {
	Type    *asserts.AssertionType
	Headers map[string]any // without "body"
	Body    []byte
}

// ParseStatement reads a statement as snapd's signtool.Sign reads it: a
// JSON object whose "type" names one of snapd's assertion types and whose
// optional "body" is a string. Values come out as snapd's headers hold
// them (strings, []any, map[string]any); a JSON number, boolean or null is
// refused here, as snapd's signing refuses it, with the header named.
// Unlike encoding/json, a header given twice is refused: officers approve
// the statement they read, and a repeated name would let the file say two
// things.
func ParseStatement(data []byte) (Statement, error) {
	if err := noRepeatedNames(data); err != nil {
		return Statement{}, err
	}
	var headers map[string]any
	if err := json.Unmarshal(data, &headers); err != nil {
		return Statement{}, fmt.Errorf("%w: cannot parse the assertion input as JSON: %v", ErrInvalidHeaders, err)
	}
	if headers == nil {
		return Statement{}, fmt.Errorf("%w: the assertion input must be a JSON object of headers", ErrInvalidHeaders)
	}
	tv, ok := headers["type"]
	if !ok {
		return Statement{}, fmt.Errorf("%w: missing assertion type header", ErrInvalidHeaders)
	}
	ts, ok := tv.(string)
	if !ok {
		return Statement{}, fmt.Errorf("%w: assertion type must be a string, not %v", ErrInvalidHeaders, tv)
	}
	t := asserts.Type(ts)
	if t == nil {
		return Statement{}, fmt.Errorf("%w: invalid assertion type %q", ErrInvalidHeaders, ts)
	}
	st := Statement{Type: t}
	if bv, ok := headers["body"]; ok {
		bs, ok := bv.(string)
		if !ok {
			return Statement{}, fmt.Errorf("%w: body if specified must be a string", ErrInvalidHeaders)
		}
		st.Body = []byte(bs)
		delete(headers, "body")
	}
	h, err := normalizeHeaders(headers)
	if err != nil {
		return Statement{}, err
	}
	st.Headers = h
	return st, nil
}

// noRepeatedNames walks the JSON document and refuses an object that names
// a key twice, at any depth.
func noRepeatedNames(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	var walk func(path string, depth int) error
	walk = func(path string, depth int) error {
		if depth > maxNesting+1 {
			return fmt.Errorf("%w: the assertion input nests more than %d deep", ErrInvalidHeaders, maxNesting)
		}
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: cannot parse the assertion input as JSON: %v", ErrInvalidHeaders, err)
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return fmt.Errorf("%w: cannot parse the assertion input as JSON: %v", ErrInvalidHeaders, err)
				}
				k, _ := kt.(string)
				if seen[k] {
					return fmt.Errorf("%w: %s names %q twice", ErrInvalidHeaders, path, k)
				}
				seen[k] = true
				if err := walk(path+"."+k, depth+1); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		}
		return nil
	}
	return walk("the assertion input", 0)
}

// Content is the signed content (headers, and the body after a blank
// line) that signing t with headers and body by the key keyID makes,
// checked by snapd's decoder as Sign checks it, without signing anything.
// It is what officers approve before a token signs it.
func Content(t *asserts.AssertionType, headers map[string]any, body []byte, keyID string) ([]byte, error) {
	s := &Signer{keyID: keyID}
	content, err := s.assemble(t, headers, body)
	if err != nil {
		return nil, err
	}
	if err := precheck(t, content); err != nil {
		return nil, err
	}
	return content, nil
}

// ContentOf is the signed content of a signed assertion.
func ContentOf(s Signed) []byte {
	c, _ := s.Assertion.Signature()
	return c
}
