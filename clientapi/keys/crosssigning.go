package keys

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// CrossSigningUpload is the body of POST /keys/device_signing/upload.
type CrossSigningUpload struct {
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
	UserSigningKey json.RawMessage `json:"user_signing_key,omitempty"`
	Auth           json.RawMessage `json:"auth,omitempty"`
}

// parseCrossSigningKey checks a cross-signing key object of userID with the given usage:
// its user_id, its usage list and its single "ed25519:<public key>" entry.
func parseCrossSigningKey(raw json.RawMessage, userID, usage string) (*storage.CrossSigningKey, *signedObject, error) {
	what := usage + " key"
	if len(raw) > MaxDeviceKeysBytes {
		return nil, nil, httputil.TooLarge("%s is larger than %d bytes", what, MaxDeviceKeysBytes)
	}
	o, err := parseSignedObject(raw, what)
	if err != nil {
		return nil, nil, err
	}
	uid, err := o.stringField("user_id", what)
	if err != nil {
		return nil, nil, err
	}
	if uid != userID {
		return nil, nil, httputil.InvalidParam("%s: user_id %q is not the authenticated user", what, uid)
	}
	var usages []string
	if err := json.Unmarshal(o.fields["usage"], &usages); err != nil || !containsString(usages, usage) {
		return nil, nil, httputil.InvalidParam("%s: usage must include %q", what, usage)
	}
	var keys map[string]string
	if err := json.Unmarshal(o.fields["keys"], &keys); err != nil || len(keys) != 1 {
		return nil, nil, httputil.InvalidParam("%s: keys must hold exactly one key", what)
	}
	var pub string
	for id, v := range keys {
		alg, name, _ := validKeyName(id)
		if _, ok := decodeKey(v); alg != "ed25519" || name != v || !ok {
			return nil, nil, httputil.InvalidParam("%s: keys must be {\"ed25519:<public key>\": \"<public key>\"}", what)
		}
		pub = v
	}
	canonical, err := o.canonical()
	if err != nil {
		return nil, nil, err
	}
	return &storage.CrossSigningKey{UserID: userID, Type: usage, PublicKey: pub, KeyJSON: canonical}, o, nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// UploadCrossSigning stores a user's cross-signing keys (POST /keys/device_signing/upload).
// The self-signing and user-signing keys must be signed by the master key (the uploaded
// one, or the stored one when none is uploaded). checkUIA runs user-interactive auth; it
// is skipped, as the spec (v1.11+) allows, when the user has no master key yet or when the
// request only repeats the keys already stored.
func (s *Service) UploadCrossSigning(ctx context.Context, userID string, req CrossSigningUpload, checkUIA func(ctx context.Context) error) error {
	var uploads []*storage.CrossSigningKey
	var master *storage.CrossSigningKey
	if len(req.MasterKey) > 0 && !isNull(req.MasterKey) {
		k, _, err := parseCrossSigningKey(req.MasterKey, userID, storage.CrossSigningMaster)
		if err != nil {
			return err
		}
		master = k
		uploads = append(uploads, k)
	}
	existing, err := storage.GetCrossSigningKeys(ctx, s.db, userID)
	if err != nil {
		return err
	}
	signer := master
	if signer == nil {
		if m, ok := existing[storage.CrossSigningMaster]; ok {
			signer = &m
		}
	}
	for _, sub := range []struct {
		raw   json.RawMessage
		usage string
	}{{req.SelfSigningKey, storage.CrossSigningSelfSigning}, {req.UserSigningKey, storage.CrossSigningUserSigning}} {
		if len(sub.raw) == 0 || isNull(sub.raw) {
			continue
		}
		k, _, err := parseCrossSigningKey(sub.raw, userID, sub.usage)
		if err != nil {
			return err
		}
		if signer == nil {
			return httputil.MissingParam("no master signing key is available to check the %s key", sub.usage)
		}
		keyID := "ed25519:" + signer.PublicKey
		if err := verifySignature(sub.raw, userID, keyID, signer.PublicKey); err != nil {
			return errInvalidSignature("%s key is not signed by the master key: %v", sub.usage, err)
		}
		uploads = append(uploads, k)
	}
	if len(uploads) == 0 {
		return nil
	}
	deviceIDs, err := storage.DeviceIDs(ctx, s.db, userID)
	if err != nil {
		return err
	}
	newKeys := false
	for _, k := range uploads {
		if containsString(deviceIDs, k.PublicKey) {
			return httputil.Forbidden("the public key of the %s key is one of your device IDs", k.Type)
		}
		if old, ok := existing[k.Type]; !ok || string(old.KeyJSON) != string(k.KeyJSON) {
			newKeys = true
		}
	}
	_, hadMaster := existing[storage.CrossSigningMaster]
	if hadMaster && newKeys {
		if err := checkUIA(ctx); err != nil {
			return err
		}
	}
	if !newKeys {
		return nil
	}
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		for _, k := range uploads {
			if !hadMaster && k.Type == storage.CrossSigningMaster {
				// UIA was skipped because there was no master key: make sure that is still
				// true, so that two racing first uploads cannot replace each other's key.
				inserted, err := storage.InsertCrossSigningKeyIfAbsent(ctx, tx, *k)
				if err != nil {
					return err
				}
				if !inserted {
					return httputil.Forbidden("cross-signing keys were uploaded concurrently; try again")
				}
				continue
			}
			if err := storage.PutCrossSigningKey(ctx, tx, *k); err != nil {
				return err
			}
		}
		_, err := storage.RecordDeviceListChange(ctx, tx, userID, "", "")
		return err
	})
}

// SignatureFailure is one entry of the failures map of POST /keys/signatures/upload.
type SignatureFailure struct {
	ErrCode string `json:"errcode"`
	Error   string `json:"error"`
}

// SignaturesResponse is the answer of POST /keys/signatures/upload.
type SignaturesResponse struct {
	Failures map[string]map[string]SignatureFailure `json:"failures"`
}

func failure(code, format string, args ...any) SignatureFailure {
	return SignatureFailure{ErrCode: code, Error: fmt.Sprintf(format, args...)}
}

// UploadSignatures stores signatures that userID made (POST /keys/signatures/upload): of
// their own devices by their self-signing key, of their own master key by one of their
// devices, and of other users' master keys by their user-signing key. Each signed object
// must equal the stored key apart from its signatures. Keys that fail are reported in
// failures; the others are stored.
func (s *Service) UploadSignatures(ctx context.Context, userID string, body map[string]map[string]json.RawMessage) (*SignaturesResponse, error) {
	resp := &SignaturesResponse{Failures: map[string]map[string]SignatureFailure{}}
	fail := func(user, key string, f SignatureFailure) {
		if resp.Failures[user] == nil {
			resp.Failures[user] = map[string]SignatureFailure{}
		}
		resp.Failures[user][key] = f
	}
	n := 0
	for _, keys := range body {
		n += len(keys)
	}
	if n > MaxSignatureUploads {
		return nil, httputil.TooLarge("at most %d signed keys may be uploaded at once", MaxSignatureUploads)
	}
	own, err := storage.GetCrossSigningKeys(ctx, s.db, userID)
	if err != nil {
		return nil, err
	}
	var sigs []storage.KeySignature
	type change struct{ user, onlyFor string }
	changes := map[change]bool{}

	targets := make([]string, 0, len(body))
	for t := range body {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	for _, target := range targets {
		domain, err := domainOf(target)
		if err != nil {
			for keyID := range body[target] {
				fail(target, keyID, failure("M_INVALID_PARAM", "%q is not a valid user ID", target))
			}
			continue
		}
		targetCS := own
		switch {
		case !s.isLocal(domain):
			// Another server's user: only their master key, signed with our user-signing
			// key, as their server publishes it (the signature stays here, shown to us).
			cs, f := s.remoteMasterKey(ctx, domain, target)
			if f != nil {
				for keyID := range body[target] {
					fail(target, keyID, *f)
				}
				continue
			}
			targetCS = cs
		case target != userID:
			if targetCS, err = storage.GetCrossSigningKeys(ctx, s.db, target); err != nil {
				return nil, err
			}
		}
		for keyID, obj := range body[target] {
			sig, f := s.checkSignedKey(ctx, userID, target, keyID, obj, own, targetCS)
			if f != nil {
				fail(target, keyID, *f)
				continue
			}
			sigs = append(sigs, sig...)
			if target == userID {
				changes[change{userID, ""}] = true
			} else {
				changes[change{target, userID}] = true
			}
		}
	}
	if len(sigs) == 0 {
		return resp, nil
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.PutKeySignatures(ctx, tx, sigs); err != nil {
			return err
		}
		list := make([]change, 0, len(changes))
		for c := range changes {
			list = append(list, c)
		}
		sort.Slice(list, func(i, j int) bool { return list[i].user+list[i].onlyFor < list[j].user+list[j].onlyFor })
		for _, c := range list {
			if _, err := storage.RecordDeviceListChange(ctx, tx, c.user, "", c.onlyFor); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// checkSignedKey checks one signed object of POST /keys/signatures/upload and returns the
// signatures to store, or why it fails.
func (s *Service) checkSignedKey(ctx context.Context, signer, target, keyID string, obj json.RawMessage,
	signerCS, targetCS map[string]storage.CrossSigningKey) ([]storage.KeySignature, *SignatureFailure) {
	o, err := parseSignedObject(obj, "signed key")
	if err != nil {
		f := failure("M_BAD_JSON", "%v", err)
		return nil, &f
	}
	mine := o.signatures[signer]
	if len(mine) == 0 {
		f := failure("M_INVALID_SIGNATURE", "no signature by %s", signer)
		return nil, &f
	}
	master, hasMaster := targetCS[storage.CrossSigningMaster]
	switch {
	case target == signer && hasMaster && keyID == master.PublicKey:
		// The user's own master key, signed by one of their devices.
		if !sameSignedContent(obj, master.KeyJSON) {
			f := failure("M_INVALID_PARAM", "the signed object does not match the stored master key")
			return nil, &f
		}
		var out []storage.KeySignature
		for sigKeyID, sig := range mine {
			alg, deviceID, _ := validKeyName(sigKeyID)
			if alg != "ed25519" || deviceID == master.PublicKey {
				continue
			}
			dk, err := storage.GetDeviceKeys(ctx, s.db, signer, deviceID)
			if err != nil {
				continue
			}
			if err := verifySignature(obj, signer, sigKeyID, dk.Ed25519); err != nil {
				f := failure("M_INVALID_SIGNATURE", "signature by device %s does not verify", deviceID)
				return nil, &f
			}
			out = append(out, storage.KeySignature{TargetUserID: target, TargetKeyID: keyID, SignerUserID: signer, SignerKeyID: sigKeyID, Signature: sig})
		}
		if len(out) == 0 {
			f := failure("M_INVALID_SIGNATURE", "no signature by one of your devices")
			return nil, &f
		}
		return out, nil

	case target == signer:
		// One of the user's devices, signed by their self-signing key.
		ssk, ok := signerCS[storage.CrossSigningSelfSigning]
		if !ok {
			f := failure("M_INVALID_PARAM", "you have no self-signing key")
			return nil, &f
		}
		dk, err := storage.GetDeviceKeys(ctx, s.db, target, keyID)
		if err != nil {
			f := failure("M_NOT_FOUND", "unknown device or key %s", keyID)
			return nil, &f
		}
		return signedBy(obj, dk.KeyJSON, signer, target, keyID, ssk, "device keys")

	default:
		// Another user's master key, signed by the signer's user-signing key.
		if !hasMaster || keyID != master.PublicKey {
			f := failure("M_NOT_FOUND", "%s has no master key %s", target, keyID)
			return nil, &f
		}
		usk, ok := signerCS[storage.CrossSigningUserSigning]
		if !ok {
			f := failure("M_INVALID_PARAM", "you have no user-signing key")
			return nil, &f
		}
		return signedBy(obj, master.KeyJSON, signer, target, keyID, usk, "master key")
	}
}

// signedBy checks that obj is the stored key with a valid signature by the signer's
// cross-signing key by.
func signedBy(obj, stored json.RawMessage, signer, target, keyID string, by storage.CrossSigningKey, what string) ([]storage.KeySignature, *SignatureFailure) {
	if !sameSignedContent(obj, stored) {
		f := failure("M_INVALID_PARAM", "the signed object does not match the stored %s", what)
		return nil, &f
	}
	sigKeyID := "ed25519:" + by.PublicKey
	o, _ := parseSignedObject(obj, "signed key")
	sig := o.signatures[signer][sigKeyID]
	if sig == "" {
		f := failure("M_INVALID_SIGNATURE", "not signed by your %s key", by.Type)
		return nil, &f
	}
	if err := verifySignature(obj, signer, sigKeyID, by.PublicKey); err != nil {
		f := failure("M_INVALID_SIGNATURE", "signature by your %s key does not verify", by.Type)
		return nil, &f
	}
	return []storage.KeySignature{{TargetUserID: target, TargetKeyID: keyID, SignerUserID: signer, SignerKeyID: sigKeyID, Signature: sig}}, nil
}
