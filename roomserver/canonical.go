package roomserver

import (
	"bytes"
	"strconv"
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
