package assertion

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"
)

// validName is what snapd's header parser accepts as a header name or map
// key; anything else would sign fine and then never decode.
var validName = regexp.MustCompile(`^[a-z](?:-?[a-z0-9])*$`)

// normalizeHeaders deep-copies headers into the only shapes snapd encodes
// (string, []any, map[string]any), so the caller can neither mutate them
// under us nor pass a type that would only fail deep inside snapd.
func normalizeHeaders(in map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(in)+4)
	for name, v := range in {
		if !validName.MatchString(name) {
			return nil, fmt.Errorf("%w: header name %q (lowercase letters, digits and single dashes, starting with a letter)", ErrInvalidHeaders, name)
		}
		nv, err := normalizeValue(name, v, 0)
		if err != nil {
			return nil, err
		}
		out[name] = nv
	}
	return out, nil
}

// maxNesting bounds list/map nesting: real assertions nest three levels
// (model snaps, components); a self-containing []any would otherwise
// recurse until the stack overflows.
const maxNesting = 16

func normalizeValue(path string, v any, depth int) (any, error) {
	if depth > maxNesting {
		return nil, fmt.Errorf("%w: header %s nests lists and maps more than %d deep", ErrInvalidHeaders, path, maxNesting)
	}
	switch x := v.(type) {
	case string:
		if !utf8.ValidString(x) {
			return nil, fmt.Errorf("%w: header %s is not UTF-8", ErrInvalidHeaders, path)
		}
		return x, nil
	case []string:
		l := make([]any, len(x))
		for i, s := range x {
			el, err := normalizeValue(fmt.Sprintf("%s[%d]", path, i), s, depth+1)
			if err != nil {
				return nil, err
			}
			l[i] = el
		}
		return l, nil
	case []any:
		l := make([]any, len(x))
		for i, el := range x {
			nel, err := normalizeValue(fmt.Sprintf("%s[%d]", path, i), el, depth+1)
			if err != nil {
				return nil, err
			}
			l[i] = nel
		}
		return l, nil
	case map[string]string:
		m := make(map[string]any, len(x))
		for k, el := range x {
			m[k] = el
		}
		return normalizeValue(path, m, depth)
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, el := range x {
			if !validName.MatchString(k) {
				return nil, fmt.Errorf("%w: header %s has an invalid map key %q", ErrInvalidHeaders, path, k)
			}
			nel, err := normalizeValue(path+"."+k, el, depth+1)
			if err != nil {
				return nil, err
			}
			m[k] = nel
		}
		return m, nil
	case nil:
		return nil, fmt.Errorf("%w: header %s has no value", ErrInvalidHeaders, path)
	default:
		return nil, fmt.Errorf("%w: header %s is a %T; values are strings, lists and maps of them", ErrInvalidHeaders, path, v)
	}
}

// Layout of snapd's header text: nested entries are indented by two
// spaces per level, list items are introduced by "-", and a multi-line
// string starts on the next line indented four spaces past its entry.
const (
	nestIndent      = "  "
	listItem        = "  -"
	multilineIndent = "    "
)

// appendEntry writes one entry in snapd's header syntax; indent is the
// column of the entry's own nesting level. Empty lists and maps are left
// out, as snapd leaves them out.
func appendEntry(buf *bytes.Buffer, intro string, v any, indent int) {
	pad := strings.Repeat(" ", indent)
	switch x := v.(type) {
	case string:
		buf.WriteByte('\n')
		buf.WriteString(intro)
		if !strings.Contains(x, "\n") {
			buf.WriteByte(' ')
			buf.WriteString(x)
			return
		}
		for _, line := range strings.Split(x, "\n") {
			buf.WriteByte('\n')
			buf.WriteString(pad)
			buf.WriteString(multilineIndent)
			buf.WriteString(line)
		}
	case []any:
		if len(x) == 0 {
			return
		}
		buf.WriteByte('\n')
		buf.WriteString(intro)
		for _, el := range x {
			// The item's contents nest one level (two columns) in.
			appendEntry(buf, pad+listItem, el, indent+len(nestIndent))
		}
	case map[string]any:
		if len(x) == 0 {
			return
		}
		buf.WriteByte('\n')
		buf.WriteString(intro)
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		inner := indent + len(nestIndent)
		for _, k := range keys {
			appendEntry(buf, strings.Repeat(" ", inner)+k+":", x[k], inner)
		}
	}
}
