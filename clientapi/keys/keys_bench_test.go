package keys

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func benchKey() (ed25519.PrivateKey, string) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return priv, base64.RawStdEncoding.EncodeToString(pub)
}

func benchSign(b testing.TB, obj map[string]any, userID, keyID string, priv ed25519.PrivateKey) json.RawMessage {
	raw, _ := json.Marshal(obj)
	signed, err := gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID(keyID), priv, raw)
	if err != nil {
		b.Fatal(err)
	}
	c, _ := gomatrixserverlib.CanonicalJSON(signed)
	return c
}

// seedKeys stores n users with perUser devices, each with self-signed device keys and a
// self-signing key signature, and master and self-signing keys per user.
func seedKeys(b testing.TB, db *storage.DB, n, perUser int) map[string][]string {
	ctx := context.Background()
	req := map[string][]string{}
	err := db.WithTx(ctx, func(tx *storage.Tx) error {
		for i := range n {
			userID := fmt.Sprintf("@user%04d:hs1.test", i)
			req[userID] = nil
			masterPriv, master := benchKey()
			sskPriv, ssk := benchKey()
			for j := range perUser {
				deviceID := fmt.Sprintf("DEV%04d%d", i, j)
				name := fmt.Sprintf("Device %d of user %d", j, i)
				if err := storage.InsertDevice(ctx, tx, storage.Device{UserID: userID, DeviceID: deviceID, DisplayName: &name, CreatedTS: 1}); err != nil {
					return err
				}
				priv, ed := benchKey()
				_, curve := benchKey()
				obj := map[string]any{"user_id": userID, "device_id": deviceID,
					"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
					"keys":       map[string]string{"ed25519:" + deviceID: ed, "curve25519:" + deviceID: curve}}
				js := benchSign(b, obj, userID, "ed25519:"+deviceID, priv)
				if _, err := storage.PutDeviceKeys(ctx, tx, storage.DeviceKeys{UserID: userID, DeviceID: deviceID, KeyJSON: js, Ed25519: ed, Curve25519: curve}); err != nil {
					return err
				}
				var withSig map[string]any
				_ = json.Unmarshal(benchSign(b, obj, userID, "ed25519:"+ssk, sskPriv), &withSig)
				sig := withSig["signatures"].(map[string]any)[userID].(map[string]any)["ed25519:"+ssk].(string)
				if err := storage.PutKeySignatures(ctx, tx, []storage.KeySignature{{TargetUserID: userID, TargetKeyID: deviceID,
					SignerUserID: userID, SignerKeyID: "ed25519:" + ssk, Signature: sig}}); err != nil {
					return err
				}
			}
			mk := map[string]any{"user_id": userID, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + master: master}}
			raw, _ := json.Marshal(mk)
			if err := storage.PutCrossSigningKey(ctx, tx, storage.CrossSigningKey{UserID: userID, Type: "master", PublicKey: master, KeyJSON: raw}); err != nil {
				return err
			}
			sk := map[string]any{"user_id": userID, "usage": []string{"self_signing"}, "keys": map[string]string{"ed25519:" + ssk: ssk}}
			if err := storage.PutCrossSigningKey(ctx, tx, storage.CrossSigningKey{UserID: userID, Type: "self_signing", PublicKey: ssk,
				KeyJSON: benchSign(b, sk, userID, "ed25519:"+master, masterPriv)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return req
}

// BenchmarkQuery1000Users measures Service.Query (database reads, signature merging) and
// the encoding of the answer for 1,000 users with 3 devices each, on both engines.
func BenchmarkQuery1000Users(b *testing.B) {
	for _, engine := range storagetest.Engines {
		b.Run(engine, func(b *testing.B) {
			db := storagetest.Open(b, engine)
			req := seedKeys(b, db, 1000, 3)
			svc := New(db, "hs1.test")
			ctx := context.Background()
			for b.Loop() {
				resp, err := svc.Query(ctx, "@viewer:hs1.test", QueryRequest{DeviceKeys: req})
				if err != nil {
					b.Fatal(err)
				}
				out, err := resp.Encode()
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.DeviceKeys) != 1000 || len(resp.DeviceKeys["@user0999:hs1.test"]) != 3 {
					b.Fatalf("answer has %d users", len(resp.DeviceKeys))
				}
				b.SetBytes(int64(len(out)))
			}
		})
	}
}
