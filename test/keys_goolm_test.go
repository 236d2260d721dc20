//go:build goolm

// Real-client interoperability of the E2EE endpoints with mautrix's OlmMachine (pure-Go
// Olm, build tag goolm). mautrix/crypto needs github.com/petermattis/goid, which go.mod
// does not list yet; until it does, run with a side module file:
//
//	cp go.mod /tmp/goolm.mod && cp go.sum /tmp/goolm.sum
//	go get -modfile=/tmp/goolm.mod go.mau.fi/util/dbutil@v0.11.0
//	go test -modfile=/tmp/goolm.mod -tags goolm ./test/ -run TestKeysWithMautrixOlmMachine

package test

import (
	"context"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/test/harness"
)

// e2eNoRooms is the OlmMachine state store of a client in no rooms.
type e2eNoRooms struct{}

func (e2eNoRooms) IsEncrypted(context.Context, id.RoomID) (bool, error) { return false, nil }
func (e2eNoRooms) GetEncryptionEvent(context.Context, id.RoomID) (*event.EncryptionEventContent, error) {
	return nil, nil
}
func (e2eNoRooms) GetHistoryVisibility(context.Context, id.RoomID) (*event.HistoryVisibilityEventContent, error) {
	return nil, nil
}
func (e2eNoRooms) FindSharedRooms(context.Context, id.UserID) ([]id.RoomID, error) { return nil, nil }

func e2eMachine(t *testing.T, d *e2eDev) *crypto.OlmMachine {
	t.Helper()
	mach := crypto.NewOlmMachine(d.cli, nil, crypto.NewMemoryStore(nil), e2eNoRooms{})
	if err := mach.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return mach
}

// TestKeysWithMautrixOlmMachine lets mautrix's crypto machine upload its Olm identity and
// one-time keys, publish cross-signing keys and sign its device, then has another user's
// machine fetch and trust-check those keys, claim a one-time key, and send an Olm-encrypted
// to-device message that the first machine decrypts from its inbox.
func TestKeysWithMautrixOlmMachine(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		ctx := context.Background()
		alice := e2eRegister(t, s, "alice")
		bob := e2eRegister(t, s, "bob")
		ma, mb := e2eMachine(t, alice), e2eMachine(t, bob)
		for _, m := range []*crypto.OlmMachine{ma, mb} {
			if err := m.ShareKeys(ctx, 0); err != nil {
				t.Fatalf("share keys: %v", err)
			}
		}
		if c := e2eCounts(t, s, alice); c["signed_curve25519"] != float64(50) {
			t.Fatalf("one-time keys uploaded by mautrix: %v", c)
		}
		if _, _, err := ma.GenerateAndUploadCrossSigningKeys(ctx, nil, ""); err != nil {
			t.Fatalf("cross-signing keys: %v", err)
		}
		if err := ma.SignOwnDevice(ctx, ma.OwnIdentity()); err != nil {
			t.Fatalf("sign own device: %v", err)
		}

		devices, err := mb.FetchKeys(ctx, []id.UserID{id.UserID(alice.userID)}, true)
		if err != nil {
			t.Fatal(err)
		}
		dev := devices[id.UserID(alice.userID)][id.DeviceID(alice.deviceID)]
		if dev == nil || dev.SigningKey != ma.OwnIdentity().SigningKey || dev.IdentityKey != ma.OwnIdentity().IdentityKey {
			t.Fatalf("bob's view of alice's device: %+v", dev)
		}
		if trust := mb.ResolveTrust(dev); trust != id.TrustStateCrossSignedTOFU {
			t.Fatalf("alice's device is not cross-signed for bob's client: %s", trust)
		}

		// Olm: bob claims one of alice's one-time keys, builds a session and sends an
		// encrypted to-device message; alice's machine decrypts it from her inbox.
		const secretType = "org.myelin.test.secret"
		content := event.Content{Raw: map[string]any{"secret": "hello alice"}}
		if err := mb.SendEncryptedToDevice(ctx, dev, event.Type{Type: secretType, Class: event.ToDeviceEventType}, content); err != nil {
			t.Fatalf("send encrypted: %v", err)
		}
		if c := e2eCounts(t, s, alice); c["signed_curve25519"] != float64(49) {
			t.Fatalf("one-time keys after bob's claim: %v", c)
		}
		db := e2eOpenDB(t, s)
		msgs, err := storage.ToDeviceSince(ctx, db, alice.userID, alice.deviceID, 0, 10)
		if err != nil || len(msgs) != 1 || msgs[0].Type != event.ToDeviceEncrypted.Type {
			t.Fatalf("alice's inbox: %+v %v", msgs, err)
		}
		evt := &event.Event{Sender: id.UserID(msgs[0].Sender), Type: event.ToDeviceEncrypted}
		if err := json.Unmarshal(msgs[0].Content, &evt.Content); err != nil {
			t.Fatal(err)
		}
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			t.Fatal(err)
		}
		decrypted := ma.HandleEncryptedEvent(ctx, evt)
		if decrypted == nil || decrypted.Type.Type != secretType || decrypted.Content.Raw["secret"] != "hello alice" {
			t.Fatalf("decrypted: %+v", decrypted)
		}
	})
}
