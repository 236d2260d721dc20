package keys

import (
	"encoding/json"
	"reflect"
	"testing"
)

func decode(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not JSON: %s: %v", raw, err)
	}
	return m
}

func TestMergeSignatures(t *testing.T) {
	cases := []struct {
		name     string
		obj      string
		add      map[string]map[string]string
		unsigned string
		want     string
	}{
		{"adds to the signer's existing signatures", `{"keys":{"a":"b"},"signatures":{"@u:hs":{"ed25519:D":"s1"}},"user_id":"@u:hs"}`,
			map[string]map[string]string{"@u:hs": {"ed25519:SSK": "s2"}}, "",
			`{"keys":{"a":"b"},"signatures":{"@u:hs":{"ed25519:D":"s1","ed25519:SSK":"s2"}},"user_id":"@u:hs"}`},
		{"adds another signer", `{"signatures":{"@u:hs":{"ed25519:D":"s1"}}}`,
			map[string]map[string]string{"@v:hs": {"ed25519:USK": "s3"}}, "",
			`{"signatures":{"@u:hs":{"ed25519:D":"s1"},"@v:hs":{"ed25519:USK":"s3"}}}`},
		{"object without signatures", `{"keys":{}}`,
			map[string]map[string]string{"@v:hs": {"k": "s"}}, "",
			`{"keys":{},"signatures":{"@v:hs":{"k":"s"}}}`},
		{"unsigned only", `{"a":1}`, nil, `{"device_display_name":"Phone \"1\""}`,
			`{"a":1,"unsigned":{"device_display_name":"Phone \"1\""}}`},
		{"empty object", `{}`, map[string]map[string]string{"@v:hs": {"k": "s"}}, `{}`,
			`{"signatures":{"@v:hs":{"k":"s"}},"unsigned":{}}`},
		{"a string that looks like a signatures key", `{"note":"\"signatures\":{}","signatures":{"@u:hs":{"a":"b"}}}`,
			map[string]map[string]string{"@u:hs": {"c": "d"}}, "",
			`{"note":"\"signatures\":{}","signatures":{"@u:hs":{"a":"b","c":"d"}}}`},
	}
	for _, c := range cases {
		var unsigned []byte
		if c.unsigned != "" {
			unsigned = []byte(c.unsigned)
		}
		got, err := mergeSignatures(json.RawMessage(c.obj), c.add, unsigned)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !reflect.DeepEqual(decode(t, got), decode(t, []byte(c.want))) {
			t.Errorf("%s:\n got  %s\n want %s", c.name, got, c.want)
		}
	}
}

func TestQueryResponseEncode(t *testing.T) {
	r := &QueryResponse{
		Failures: map[string]any{"elsewhere.test": remoteFailure},
		DeviceKeys: map[string]map[string]json.RawMessage{
			"@a:hs":         {"D1": json.RawMessage(`{"device_id":"D1"}`), "D\"2": json.RawMessage(`{"device_id":"D\"2"}`)},
			"@é\u2028:hs":   {},
			"@empty:hs.org": {},
		},
		MasterKeys:      map[string]json.RawMessage{"@a:hs": json.RawMessage(`{"usage":["master"]}`)},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{"@a:hs": json.RawMessage(`{"usage":["user_signing"]}`)},
	}
	got, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(r)
	if !reflect.DeepEqual(decode(t, got), decode(t, want)) {
		t.Fatalf("Encode differs from encoding/json:\n got  %s\n want %s", got, want)
	}
}

func TestValidKeyName(t *testing.T) {
	for name, ok := range map[string]bool{
		"signed_curve25519:AAAAHg": true, "ed25519:abc+/=": true,
		"nocolon": false, ":id": false, "alg:": false, "alg:with space": false, "alg:tab\t": false,
	} {
		if _, _, got := validKeyName(name); got != ok {
			t.Errorf("validKeyName(%q) = %v", name, got)
		}
	}
}
