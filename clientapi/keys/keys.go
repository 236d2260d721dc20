// Package keys is Myelin's end-to-end encryption component: device, one-time, fallback
// and cross-signing keys (/keys/*), server-side key backups (/room_keys/*), send-to-device
// messages and dehydrated devices (MSC3814). It checks every signature it stores; the
// HTTP handlers in clientapi only decode requests and call it.
//
// What /sync needs lives in the storage package, below syncapi: storage.ToDeviceSince and
// storage.AckToDevice for a device's inbox, storage.DeviceListChangedUsers for
// device_lists.changed, storage.OneTimeKeyCounts and storage.UnusedFallbackKeyTypes.
package keys

import (
	"context"
	"encoding/json"
	"errors"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// Limits on what one request may carry. Request bodies are also bounded by the server's
// limits.max_request_bytes.
const (
	MaxOneTimeKeysPerUpload  = 1000
	MaxFallbackKeysPerUpload = 16
	MaxDeviceKeysBytes       = 32 * 1024
	MaxQueryUsers            = 10000
	MaxClaims                = 10000
	MaxSignatureUploads      = 1000
	MaxToDeviceMessages      = 10000
)

// Service is the end-to-end encryption component. It holds no state of its own beyond
// its handles, so it is cheap to create.
type Service struct {
	db         *storage.DB
	serverName string
	remote     Remote
}

// New returns the component for the server whose users are those of serverName.
func New(db *storage.DB, serverName string) *Service {
	return &Service{db: db, serverName: serverName}
}

// domainOf returns the server name of a user ID, or an M_INVALID_PARAM error.
func domainOf(userID string) (string, error) {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return "", httputil.InvalidParam("%q is not a valid user ID", userID)
	}
	return string(u.Domain()), nil
}

func (s *Service) isLocal(domain string) bool { return domain == s.serverName }

// remoteFailure is what failures holds for a server we cannot ask (no federation).
var remoteFailure = map[string]any{"status": 503, "message": "Federation is not available"}

// UploadRequest is the body of POST /keys/upload.
type UploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys,omitempty"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys,omitempty"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys,omitempty"`
}

// UploadResponse is the answer of POST /keys/upload.
type UploadResponse struct {
	OneTimeKeyCounts map[string]int `json:"one_time_key_counts"`
}

// preparedUpload is a verified upload, ready to be written.
type preparedUpload struct {
	userID, deviceID string
	deviceKeys       *storage.DeviceKeys
	oneTimeKeys      []storage.OneTimeKey
	fallbackKeys     []storage.OneTimeKey
}

// parseDeviceKeys checks a device_keys object for the given device and its self-signature.
func parseDeviceKeys(raw json.RawMessage, userID, deviceID string) (*storage.DeviceKeys, error) {
	if len(raw) > MaxDeviceKeysBytes {
		return nil, httputil.TooLarge("device_keys is larger than %d bytes", MaxDeviceKeysBytes)
	}
	o, err := parseSignedObject(raw, "device_keys")
	if err != nil {
		return nil, err
	}
	uid, err := o.stringField("user_id", "device_keys")
	if err != nil {
		return nil, err
	}
	did, err := o.stringField("device_id", "device_keys")
	if err != nil {
		return nil, err
	}
	if uid != userID {
		return nil, httputil.InvalidParam("device_keys.user_id %q does not match the authenticated user", uid)
	}
	if did != deviceID {
		return nil, httputil.InvalidParam("device_keys.device_id %q does not match the authenticated device", did)
	}
	var algorithms []string
	if err := json.Unmarshal(o.fields["algorithms"], &algorithms); err != nil || algorithms == nil {
		return nil, httputil.BadJSON("device_keys.algorithms must be a list of strings")
	}
	var keys map[string]string
	if err := json.Unmarshal(o.fields["keys"], &keys); err != nil || keys == nil {
		return nil, httputil.BadJSON("device_keys.keys must map key IDs to keys")
	}
	if len(algorithms) > 64 || len(keys) > 64 {
		return nil, httputil.InvalidParam("device_keys lists too many algorithms or keys")
	}
	edID := "ed25519:" + deviceID
	ed, ok := keys[edID]
	if _, valid := decodeKey(ed); !ok || !valid {
		return nil, httputil.InvalidParam("device_keys.keys must hold the device's ed25519 key as %q", edID)
	}
	curve := keys["curve25519:"+deviceID]
	// A self-signature that is there must verify. A missing one is accepted, as Synapse
	// does (Complement and some clients upload unsigned keys): clients check it anyway
	// before they trust a device.
	if o.signatures[userID][edID] != "" {
		if err := verifySignature(raw, userID, edID, ed); err != nil {
			return nil, errInvalidSignature("device_keys signature does not verify: %v", err)
		}
	}
	canonical, err := o.canonical()
	if err != nil {
		return nil, err
	}
	return &storage.DeviceKeys{UserID: userID, DeviceID: deviceID, KeyJSON: canonical, Ed25519: ed, Curve25519: curve}, nil
}

// parseOneTimeKeys checks one-time or fallback keys: names "<algorithm>:<id>", values a key
// string (unsigned algorithms) or a key object; keys of "signed_" algorithms must carry a
// valid signature of the device's ed25519 key ed ("" when the device has none).
func parseOneTimeKeys(in map[string]json.RawMessage, what, userID, deviceID, ed string) ([]storage.OneTimeKey, error) {
	names := make([]string, 0, len(in))
	for name := range in {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]storage.OneTimeKey, 0, len(in))
	for _, name := range names {
		raw := in[name]
		alg, id, ok := validKeyName(name)
		if !ok {
			return nil, httputil.InvalidParam("%s: %q is not an <algorithm>:<key_id> name", what, name)
		}
		var js json.RawMessage
		var str string
		if isNull(raw) {
			return nil, httputil.BadJSON("%s: %s must be a key", what, name)
		}
		if err := json.Unmarshal(raw, &str); err == nil {
			if str == "" {
				return nil, httputil.BadJSON("%s: %s must be a key", what, name)
			}
			if len(alg) > 7 && alg[:7] == "signed_" {
				return nil, httputil.BadJSON("%s: %s must be a signed key object", what, name)
			}
			js, _ = json.Marshal(str)
		} else {
			o, err := parseSignedObject(raw, what+" "+name)
			if err != nil {
				return nil, err
			}
			if _, err := o.stringField("key", what+" "+name); err != nil {
				return nil, err
			}
			if len(alg) > 7 && alg[:7] == "signed_" {
				edID := "ed25519:" + deviceID
				if ed == "" {
					return nil, httputil.InvalidParam("%s: upload device_keys before signed keys", what)
				}
				if o.signatures[userID][edID] == "" {
					return nil, errInvalidSignature("%s: %s is not signed by the device's ed25519 key", what, name)
				}
				if err := verifySignature(raw, userID, edID, ed); err != nil {
					return nil, errInvalidSignature("%s: signature of %s does not verify: %v", what, name, err)
				}
			}
			if js, err = o.canonical(); err != nil {
				return nil, err
			}
		}
		out = append(out, storage.OneTimeKey{Algorithm: alg, KeyID: id, KeyJSON: js})
	}
	return out, nil
}

// prepareUpload verifies everything an upload carries without writing anything.
// storedEd is the ed25519 key already stored for the device ("" when none).
func prepareUpload(userID, deviceID string, req UploadRequest, storedEd string) (*preparedUpload, error) {
	p := &preparedUpload{userID: userID, deviceID: deviceID}
	ed := storedEd
	if len(req.DeviceKeys) > 0 && !isNull(req.DeviceKeys) {
		dk, err := parseDeviceKeys(req.DeviceKeys, userID, deviceID)
		if err != nil {
			return nil, err
		}
		p.deviceKeys, ed = dk, dk.Ed25519
	}
	if len(req.OneTimeKeys) > MaxOneTimeKeysPerUpload {
		return nil, httputil.TooLarge("at most %d one-time keys may be uploaded at once", MaxOneTimeKeysPerUpload)
	}
	if len(req.FallbackKeys) > MaxFallbackKeysPerUpload {
		return nil, httputil.TooLarge("at most %d fallback keys may be uploaded at once", MaxFallbackKeysPerUpload)
	}
	var err error
	if p.oneTimeKeys, err = parseOneTimeKeys(req.OneTimeKeys, "one_time_keys", userID, deviceID, ed); err != nil {
		return nil, err
	}
	if p.fallbackKeys, err = parseOneTimeKeys(req.FallbackKeys, "fallback_keys", userID, deviceID, ed); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, k := range p.fallbackKeys {
		if seen[k.Algorithm] {
			return nil, httputil.InvalidParam("fallback_keys: only one key per algorithm")
		}
		seen[k.Algorithm] = true
	}
	return p, nil
}

// apply writes a prepared upload in tx and records a device-list change when the
// device's keys are new or changed.
func (p *preparedUpload) apply(ctx context.Context, tx *storage.Tx) error {
	if p.deviceKeys != nil {
		changed, err := storage.PutDeviceKeys(ctx, tx, *p.deviceKeys)
		if err != nil {
			return err
		}
		if changed {
			if _, err := storage.RecordDeviceListChange(ctx, tx, p.userID, p.deviceID, ""); err != nil {
				return err
			}
		}
	}
	if err := storage.InsertOneTimeKeys(ctx, tx, p.userID, p.deviceID, p.oneTimeKeys); err != nil {
		if errors.Is(err, storage.ErrKeyConflict) {
			return httputil.InvalidParam("one_time_keys: a key ID was already uploaded with different content (%v)", err)
		}
		if errors.Is(err, storage.ErrTooManyKeys) {
			return httputil.InvalidParam("the device holds too many unclaimed one-time keys")
		}
		return err
	}
	return storage.SetFallbackKeys(ctx, tx, p.userID, p.deviceID, p.fallbackKeys)
}

// storedEd25519 returns the device's stored ed25519 key, "" when none.
func storedEd25519(ctx context.Context, q storage.Querier, userID, deviceID string) (string, error) {
	k, err := storage.GetDeviceKeys(ctx, q, userID, deviceID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	return k.Ed25519, err
}

// Upload stores the keys a device uploads (POST /keys/upload) after checking them: the
// device keys must be the caller's own and self-signed, signed one-time and fallback keys
// must be signed by the device. Either everything is stored or nothing is.
func (s *Service) Upload(ctx context.Context, userID, deviceID string, req UploadRequest) (*UploadResponse, error) {
	ed, err := storedEd25519(ctx, s.db, userID, deviceID)
	if err != nil {
		return nil, err
	}
	p, err := prepareUpload(userID, deviceID, req, ed)
	if err != nil {
		return nil, err
	}
	if p.deviceKeys != nil || len(p.oneTimeKeys) > 0 || len(p.fallbackKeys) > 0 {
		if err := s.db.WithTx(ctx, func(tx *storage.Tx) error { return p.apply(ctx, tx) }); err != nil {
			return nil, err
		}
	}
	counts, err := storage.OneTimeKeyCounts(ctx, s.db, userID, deviceID)
	if err != nil {
		return nil, err
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		// Clients (libolm-era ones in particular) expect this algorithm to be listed.
		counts["signed_curve25519"] = 0
	}
	return &UploadResponse{OneTimeKeyCounts: counts}, nil
}

// QueryRequest is the body of POST /keys/query.
type QueryRequest struct {
	Timeout    *int64              `json:"timeout,omitempty"`
	DeviceKeys map[string][]string `json:"device_keys"`
}

// QueryResponse is the answer of POST /keys/query.
type QueryResponse struct {
	Failures        map[string]any                        `json:"failures"`
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
}

type deviceUnsigned struct {
	DeviceDisplayName string `json:"device_display_name,omitempty"`
}

// Query returns the device and cross-signing keys of users (POST /keys/query) as requester
// may see them: device keys with the signatures of their owner's self-signing key, master
// keys with their owner's signatures and requester's own, and the user-signing key only of
// requester. Users of other servers are asked of their server (through Remote, all
// servers at once, within the request's timeout); servers that could not answer are
// listed in failures.
func (s *Service) Query(ctx context.Context, requester string, req QueryRequest) (*QueryResponse, error) {
	if req.DeviceKeys == nil {
		return nil, httputil.MissingParam("device_keys is required")
	}
	if len(req.DeviceKeys) > MaxQueryUsers {
		return nil, httputil.TooLarge("at most %d users may be queried at once", MaxQueryUsers)
	}
	resp := &QueryResponse{
		Failures:        map[string]any{},
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
	local := map[string][]string{}
	remote := map[string]map[string][]string{}
	var localIDs []string
	for userID, devices := range req.DeviceKeys {
		domain, err := domainOf(userID)
		if err != nil {
			return nil, err
		}
		if !s.isLocal(domain) {
			if s.remote == nil {
				resp.Failures[domain] = remoteFailure
				continue
			}
			if remote[domain] == nil {
				remote[domain] = map[string][]string{}
			}
			remote[domain][userID] = devices
			continue
		}
		local[userID] = devices
		localIDs = append(localIDs, userID)
		resp.DeviceKeys[userID] = map[string]json.RawMessage{}
	}
	if len(remote) > 0 {
		s.queryRemote(ctx, remoteTimeout(req.Timeout), remote, resp)
		var users []string
		for _, us := range remote {
			for u := range us {
				users = append(users, u)
			}
		}
		sort.Strings(users)
		if err := s.addOwnSignatures(ctx, requester, users, resp); err != nil {
			return nil, err
		}
	}
	if len(local) == 0 {
		return resp, nil
	}
	sort.Strings(localIDs)
	devices, err := storage.QueryDeviceKeys(ctx, s.db, local)
	if err != nil {
		return nil, err
	}
	csKeys, err := storage.QueryCrossSigningKeys(ctx, s.db, localIDs)
	if err != nil {
		return nil, err
	}
	sigs, err := storage.QueryKeySignatures(ctx, s.db, localIDs)
	if err != nil {
		return nil, err
	}
	// Signatures by target user and key ID, only those requester may see: the owner's own
	// (self-signing key on devices, devices on the master key) and requester's.
	visible := map[[2]string]map[string]map[string]string{}
	for _, sg := range sigs {
		if sg.SignerUserID != sg.TargetUserID && sg.SignerUserID != requester {
			continue
		}
		k := [2]string{sg.TargetUserID, sg.TargetKeyID}
		if visible[k] == nil {
			visible[k] = map[string]map[string]string{}
		}
		if visible[k][sg.SignerUserID] == nil {
			visible[k][sg.SignerUserID] = map[string]string{}
		}
		visible[k][sg.SignerUserID][sg.SignerKeyID] = sg.Signature
	}
	for _, d := range devices {
		unsigned := []byte("{}")
		if d.DisplayName != nil && *d.DisplayName != "" {
			if unsigned, err = json.Marshal(deviceUnsigned{DeviceDisplayName: *d.DisplayName}); err != nil {
				return nil, err
			}
		}
		js, err := mergeSignatures(d.KeyJSON, visible[[2]string{d.UserID, d.DeviceID}], unsigned)
		if err != nil {
			return nil, err
		}
		resp.DeviceKeys[d.UserID][d.DeviceID] = js
	}
	for userID, keys := range csKeys {
		if k, ok := keys[storage.CrossSigningMaster]; ok {
			js, err := mergeSignatures(k.KeyJSON, visible[[2]string{userID, k.PublicKey}], nil)
			if err != nil {
				return nil, err
			}
			resp.MasterKeys[userID] = js
		}
		if k, ok := keys[storage.CrossSigningSelfSigning]; ok {
			resp.SelfSigningKeys[userID] = k.KeyJSON
		}
		if k, ok := keys[storage.CrossSigningUserSigning]; ok && userID == requester {
			resp.UserSigningKeys[userID] = k.KeyJSON
		}
	}
	return resp, nil
}

// ClaimRequest is the body of POST /keys/claim.
type ClaimRequest struct {
	Timeout     *int64                       `json:"timeout,omitempty"`
	OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
}

// ClaimResponse is the answer of POST /keys/claim.
type ClaimResponse struct {
	Failures    map[string]any                                   `json:"failures"`
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

// Claim hands out one key per requested device and algorithm (POST /keys/claim): the
// oldest one-time key, each exactly once even under concurrent claims, or the device's
// fallback key when none are left. Devices without keys are left out of the answer.
func (s *Service) Claim(ctx context.Context, req ClaimRequest) (*ClaimResponse, error) {
	if req.OneTimeKeys == nil {
		return nil, httputil.MissingParam("one_time_keys is required")
	}
	type want struct{ user, device, algorithm string }
	var wants []want
	resp := &ClaimResponse{Failures: map[string]any{}, OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}}
	remote := map[string]map[string]map[string]string{}
	for userID, devices := range req.OneTimeKeys {
		domain, err := domainOf(userID)
		if err != nil {
			return nil, err
		}
		if !s.isLocal(domain) {
			if s.remote == nil {
				resp.Failures[domain] = remoteFailure
				continue
			}
			if remote[domain] == nil {
				remote[domain] = map[string]map[string]string{}
			}
			remote[domain][userID] = devices
			continue
		}
		for device, alg := range devices {
			wants = append(wants, want{userID, device, alg})
		}
	}
	if len(wants) > MaxClaims {
		return nil, httputil.TooLarge("at most %d keys may be claimed at once", MaxClaims)
	}
	if len(remote) > 0 {
		s.claimRemote(ctx, remoteTimeout(req.Timeout), remote, resp)
	}
	if len(wants) == 0 {
		return resp, nil
	}
	// A stable order keeps concurrent multi-device claims from locking rows in opposite orders.
	sort.Slice(wants, func(i, j int) bool {
		if wants[i].user != wants[j].user {
			return wants[i].user < wants[j].user
		}
		return wants[i].device < wants[j].device
	})
	type claimed struct {
		want
		key storage.OneTimeKey
	}
	var got []claimed
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		got = got[:0]
		for _, w := range wants {
			k, _, err := storage.ClaimOneTimeKey(ctx, tx, w.user, w.device, w.algorithm)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			got = append(got, claimed{w, k})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, c := range got {
		if resp.OneTimeKeys[c.user] == nil {
			resp.OneTimeKeys[c.user] = map[string]map[string]json.RawMessage{}
		}
		resp.OneTimeKeys[c.user][c.device] = map[string]json.RawMessage{c.key.FullKeyID(): c.key.KeyJSON}
	}
	return resp, nil
}

// Encode returns the JSON of the answer. The key objects in it were validated and
// canonicalised when stored, so they are copied as they are, without the validation and
// compaction pass encoding/json gives every json.RawMessage: for a large account that pass
// costs as much as the rest of the query.
func (r *QueryResponse) Encode() (json.RawMessage, error) {
	size := 256
	for _, devs := range r.DeviceKeys {
		for _, js := range devs {
			size += len(js) + 32
		}
	}
	for _, m := range []map[string]json.RawMessage{r.MasterKeys, r.SelfSigningKeys, r.UserSigningKeys} {
		for _, js := range m {
			size += len(js) + 64
		}
	}
	b := make([]byte, 0, size)
	failures, err := json.Marshal(r.Failures)
	if err != nil {
		return nil, err
	}
	b = append(b, `{"failures":`...)
	b = append(b, failures...)
	b = append(b, `,"device_keys":{`...)
	first := true
	for user, devs := range r.DeviceKeys {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, user)
		b = append(b, ':', '{')
		firstDev := true
		for dev, js := range devs {
			if !firstDev {
				b = append(b, ',')
			}
			firstDev = false
			b = appendJSONString(b, dev)
			b = append(b, ':')
			b = append(b, js...)
		}
		b = append(b, '}')
	}
	b = append(b, '}')
	for _, part := range []struct {
		name string
		keys map[string]json.RawMessage
	}{{"master_keys", r.MasterKeys}, {"self_signing_keys", r.SelfSigningKeys}, {"user_signing_keys", r.UserSigningKeys}} {
		b = append(b, `,"`...)
		b = append(b, part.name...)
		b = append(b, `":{`...)
		first := true
		for user, js := range part.keys {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendJSONString(b, user)
			b = append(b, ':')
			b = append(b, js...)
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			quoted, _ := json.Marshal(s)
			return append(b, quoted...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
