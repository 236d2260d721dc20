package roomserver

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// negativeFraction returns the first non-zero number in the JSON text written with a
// minus sign and a leading zero ("-0.5", "-0.25e1"), or "" when there is none.
//
// gomatrixserverlib's canonical JSON drops the minus sign of such a number (it strips
// "-" before every "0" to turn -0 into 0), so an event holding -0.5 would be hashed,
// signed and stored as 0.5. Room versions 6 and later refuse fractions anyway; in older
// ones this server refuses these numbers rather than change what the sender wrote. (An
// integer never starts with 0, and -0 itself is 0 either way.)
func negativeFraction(content []byte) string {
	if !bytes.Contains(content, []byte("-0")) {
		return ""
	}
	inString := false
	for i := 0; i < len(content); i++ {
		c := content[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch {
		case c == '"':
			inString = true
		case c == '-' && i+1 < len(content) && content[i+1] == '0':
			end := i + 1
			for end < len(content) && bytes.IndexByte([]byte("0123456789.eE+-"), content[end]) >= 0 {
				end++
			}
			if v, err := strconv.ParseFloat(string(content[i:end]), 64); err == nil && v != 0 {
				return string(content[i:end])
			}
			i = end - 1
		}
	}
	return ""
}

// escapedKey returns the first object key in the JSON text that holds (once decoded) a
// quote, a backslash or a control character, or "" when there is none.
//
// gomatrixserverlib's canonical JSON writes object keys without escaping them again:
// such a key comes out as invalid JSON ({"a\"b":1} -> {"a"b":1}) or, worse, as another
// key ({"a\\b":1} -> {"a\b":1}, a backspace). Events refuse them. Only escapes can put
// these characters in a key, so text without a backslash is skipped at once.
func escapedKey(content []byte) string {
	if bytes.IndexByte(content, '\\') < 0 {
		return ""
	}
	for i := 0; i < len(content); i++ {
		if content[i] != '"' {
			continue
		}
		start, escaped := i, false
		for i++; i < len(content) && content[i] != '"'; i++ {
			if content[i] == '\\' {
				escaped = true
				i++
			}
		}
		if !escaped || i >= len(content) {
			continue
		}
		j := i + 1
		for j < len(content) && (content[j] == ' ' || content[j] == '\t' || content[j] == '\n' || content[j] == '\r') {
			j++
		}
		if j >= len(content) || content[j] != ':' {
			continue // a value, not a key
		}
		var key string
		if json.Unmarshal(content[start:i+1], &key) != nil {
			continue
		}
		if strings.IndexFunc(key, func(r rune) bool { return r == '"' || r == '\\' || r < 0x20 }) >= 0 {
			return key
		}
	}
	return ""
}
