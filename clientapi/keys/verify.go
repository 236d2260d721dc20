package keys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// errInvalidSignature is the spec's 400 M_INVALID_SIGNATURE.
func errInvalidSignature(format string, args ...any) *httputil.Error {
	return httputil.NewError(400, "M_INVALID_SIGNATURE", format, args...)
}

// decodeKey decodes an unpadded (or padded) base64 ed25519 public key.
func decodeKey(b64 string) (ed25519.PublicKey, bool) {
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(raw), true
}

// verifySignature checks that obj carries a valid signatures[signer][keyID] made with the
// base64 ed25519 public key pub, over obj's canonical JSON without signatures and unsigned.
func verifySignature(obj []byte, signer, keyID, pub string) error {
	key, ok := decodeKey(pub)
	if !ok {
		return fmt.Errorf("key %s is not a base64 ed25519 public key", keyID)
	}
	return gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(keyID), key, obj)
}

// signedObject is a JSON object split into its fields, with its signatures parsed.
type signedObject struct {
	fields     map[string]json.RawMessage
	signatures map[string]map[string]string
}

// parseSignedObject parses a JSON object that may carry "signatures"; what names the
// object in error messages.
func parseSignedObject(raw json.RawMessage, what string) (*signedObject, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, httputil.BadJSON("%s must be a JSON object", what)
	}
	o := &signedObject{}
	if err := json.Unmarshal(raw, &o.fields); err != nil {
		return nil, httputil.BadJSON("%s is not valid JSON: %v", what, err)
	}
	if s, ok := o.fields["signatures"]; ok && !isNull(s) {
		if err := json.Unmarshal(s, &o.signatures); err != nil {
			return nil, httputil.BadJSON("%s: signatures must map user IDs to key IDs to signatures", what)
		}
	}
	return o, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// stringField returns a required string field.
func (o *signedObject) stringField(name, what string) (string, error) {
	raw, ok := o.fields[name]
	if !ok || isNull(raw) {
		return "", httputil.BadJSON("%s: missing %s", what, name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", httputil.BadJSON("%s: %s must be a string", what, name)
	}
	return s, nil
}

// canonical returns the canonical JSON of the object. Without the "unsigned" field, which
// servers fill in on the way out and clients must not upload.
func (o *signedObject) canonical() (json.RawMessage, error) {
	fields := make(map[string]json.RawMessage, len(o.fields))
	for k, v := range o.fields {
		if k != "unsigned" {
			fields[k] = v
		}
	}
	raw, err := json.Marshal(fields)
	if err != nil {
		return nil, httputil.BadJSON("cannot encode object: %v", err)
	}
	c, err := gomatrixserverlib.CanonicalJSON(raw)
	if err != nil {
		return nil, httputil.BadJSON("object is not canonical-JSON encodable: %v", err)
	}
	return c, nil
}

// withoutSignatures returns the canonical JSON of the object without signatures and
// unsigned: the part that signatures cover, for comparing two copies of one key.
func (o *signedObject) withoutSignatures() (string, error) {
	fields := make(map[string]json.RawMessage, len(o.fields))
	for k, v := range o.fields {
		if k != "unsigned" && k != "signatures" {
			fields[k] = v
		}
	}
	raw, err := json.Marshal(fields)
	if err != nil {
		return "", httputil.BadJSON("cannot encode object: %v", err)
	}
	c, err := gomatrixserverlib.CanonicalJSON(raw)
	if err != nil {
		return "", httputil.BadJSON("object is not canonical-JSON encodable: %v", err)
	}
	return string(c), nil
}

// sameSignedContent reports whether two JSON objects are equal apart from signatures and unsigned.
func sameSignedContent(a, b json.RawMessage) bool {
	oa, err := parseSignedObject(a, "a")
	if err != nil {
		return false
	}
	ob, err := parseSignedObject(b, "b")
	if err != nil {
		return false
	}
	ca, err1 := oa.withoutSignatures()
	cb, err2 := ob.withoutSignatures()
	return err1 == nil && err2 == nil && ca == cb
}

// validKeyName checks an "<algorithm>:<id>" name and splits it.
func validKeyName(name string) (algorithm, id string, ok bool) {
	algorithm, id, ok = strings.Cut(name, ":")
	if !ok || algorithm == "" || id == "" || len(name) > 255 {
		return "", "", false
	}
	for _, r := range name {
		if r < 0x21 || r == 0x7f {
			return "", "", false
		}
	}
	return algorithm, id, true
}

// mergeSignatures adds signatures (signer user → key ID → signature) to a signed JSON
// object and sets its "unsigned" field to the JSON unsigned when that is not nil. The
// object is one stored by this package (valid, without "unsigned"), so the new parts are
// spliced into it instead of decoding and re-encoding the whole object: /keys/query does
// this for thousands of devices at once.
func mergeSignatures(obj json.RawMessage, add map[string]map[string]string, unsigned []byte) (json.RawMessage, error) {
	if len(add) == 0 && unsigned == nil {
		return obj, nil
	}
	out := []byte(obj)
	if len(add) > 0 {
		res := gjson.GetBytes(out, "signatures")
		sigs := map[string]map[string]string{}
		if res.Exists() && res.Type != gjson.Null {
			if err := json.Unmarshal([]byte(res.Raw), &sigs); err != nil {
				return nil, fmt.Errorf("stored signatures: %w", err)
			}
		}
		for user, m := range add {
			if sigs[user] == nil {
				sigs[user] = map[string]string{}
			}
			for k, v := range m {
				sigs[user][k] = v
			}
		}
		raw, err := json.Marshal(sigs)
		if err != nil {
			return nil, err
		}
		if res.Exists() && res.Index > 0 {
			spliced := make([]byte, 0, len(out)-len(res.Raw)+len(raw))
			spliced = append(spliced, out[:res.Index]...)
			spliced = append(spliced, raw...)
			out = append(spliced, out[res.Index+len(res.Raw):]...)
		} else {
			out = insertField(out, "signatures", raw)
		}
	}
	if unsigned != nil {
		out = insertField(out, "unsigned", unsigned)
	}
	return out, nil
}

// insertField adds "name": value to a JSON object that does not have the field yet.
func insertField(obj []byte, name string, value []byte) []byte {
	end := bytes.LastIndexByte(obj, '}')
	out := make([]byte, 0, len(obj)+len(name)+len(value)+4)
	out = append(out, obj[:end]...)
	if len(bytes.TrimSpace(obj[1:end])) > 0 {
		out = append(out, ',')
	}
	out = append(out, '"')
	out = append(out, name...)
	out = append(out, '"', ':')
	out = append(out, value...)
	return append(out, '}')
}
