// End-to-end encryption with matrix-js-sdk and its Rust crypto against Myelin:
//  1. Alice and Bob share an encrypted room (m.megolm.v1.aes-sha2) and each decrypts
//     the other's messages (device keys, one-time key claims, Olm to-device room keys).
//  2. Alice bootstraps cross-signing (UIA with her password) and secret storage with a
//     key backup; Bob sees her cross-signing identity, bootstraps his own, and the two
//     verify each other with an in-room SAS verification (user-signing signatures).
//  3. Alice logs in on a second device, loads the backup key from secret storage and
//     restores the backup, then reads the messages sent before that device existed.
//  4. Carol joins later: she decrypts new messages but not the ones sent before she
//     joined (the Rust crypto shares the current Megolm session from its current ratchet
//     index; it does not re-share older keys on join).
//  5. Alice sets up a dehydrated device (MSC3814), all her devices go offline, Bob
//     writes; a new device of Alice rehydrates and reads Bob's message.
// Usage: node e2ee.mjs <homeserver URL>
import "./polyfill.mjs";
import { createClient, ClientEvent, RoomEvent, RoomMemberEvent } from "matrix-js-sdk";
import { register as registerAt, started as startedWith, waitFor, encEvents, clearBodies, waitDecrypted } from "./e2ee_lib.mjs";
import assert from "node:assert/strict";

const baseUrl = process.argv[2];
const step = (s) => process.stdout.write(`[${new Date().toISOString()}] ${s}\n`);
// The SDK logs every request at debug/info level; keep warnings and errors unless asked.
if (!process.env.E2EE_DEBUG) console.debug = console.info = console.log = () => {};
// Keep the run bounded whatever happens.
setTimeout(() => { console.error("e2ee.mjs: overall timeout"); process.exit(2); }, 150000).unref();

const register = (name) => registerAt(baseUrl, name);
// Secret storage keys a client may use, keyed by key ID (filled when Alice creates one).
const ssKeys = new Map();
let lastSSKey = null;
const cryptoCallbacks = {
  getSecretStorageKey: async ({ keys }) => {
    for (const id of Object.keys(keys)) {
      if (ssKeys.has(id)) return [id, ssKeys.get(id)];
    }
    if (lastSSKey) return [Object.keys(keys)[0], lastSSKey];
    return null;
  },
  cacheSecretStorageKey: (keyId, _info, key) => { ssKeys.set(keyId, key); },
};
const started = (reg) => startedWith({ baseUrl, ...reg }, cryptoCallbacks);

async function until(what, check, explain, ms = 15000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what + (explain ? ": " + (await explain()) : ""));
    await new Promise((r) => setTimeout(r, 300));
  }
}
async function queryKeys(reg, userId) {
  const res = await fetch(`${baseUrl}/_matrix/client/v3/keys/query`, { method: "POST", headers: { Authorization: `Bearer ${reg.access_token}`, "Content-Type": "application/json" }, body: JSON.stringify({ device_keys: { [userId]: [] } }) });
  return res.json();
}

async function waitJoined(c, roomId, userId, who) {
  await waitFor(`${who} sees ${userId} joined`, c, [RoomMemberEvent.Membership, ClientEvent.Room], () => c.getRoom(roomId)?.getMember(userId)?.membership === "join");
}

step("register");
const aliceReg = await register("alice");
const bobReg = await register("bob");
const carolReg = await register("carol");
const alice = await started(aliceReg);
const bob = await started(bobReg);

step("encrypted room");
const { room_id: roomId } = await alice.createRoom({
  preset: "private_chat",
  name: "E2EE room",
  invite: [bobReg.user_id],
  initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
});
await waitFor("bob invited", bob, [ClientEvent.Room, RoomEvent.MyMembership], () => bob.getRoom(roomId)?.getMyMembership() === "invite");
await bob.joinRoom(roomId);
await waitJoined(alice, roomId, bobReg.user_id, "alice");
await waitFor("bob's room is encrypted", bob, [RoomEvent.Timeline], () => bob.getRoom(roomId)?.hasEncryptionStateEvent());
assert.equal(alice.getRoom(roomId).hasEncryptionStateEvent(), true);
const hv = alice.getRoom(roomId).currentState.getStateEvents("m.room.history_visibility", "")?.getContent().history_visibility;
step(`history_visibility: ${hv}`);

step("alice -> bob");
await alice.sendTextMessage(roomId, "secret 1 from alice");
await waitDecrypted(bob, roomId, "secret 1 from alice", "bob");
const ev1 = encEvents(bob, roomId).find((e) => e.getClearContent()?.body === "secret 1 from alice");
assert.equal(ev1.getWireContent().algorithm, "m.megolm.v1.aes-sha2", "sent with megolm");
assert.equal(ev1.getWireContent().body, undefined, "the server saw no plaintext");
step("bob -> alice");
await bob.sendTextMessage(roomId, "secret 2 from bob");
await waitDecrypted(alice, roomId, "secret 2 from bob", "alice");

step("alice: cross-signing");
const aliceCrypto = alice.getCrypto();
await aliceCrypto.bootstrapCrossSigning({
  authUploadDeviceSigningKeys: async (makeRequest) => {
    await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: aliceReg.user_id }, password: aliceReg.password });
  },
});
const cs = await aliceCrypto.getCrossSigningStatus();
assert.ok(cs.publicKeysOnDevice && cs.privateKeysCachedLocally.masterKey, "cross-signing set up: " + JSON.stringify(cs));
await until("alice's device is cross-signed", async () => (await aliceCrypto.getDeviceVerificationStatus(aliceReg.user_id, aliceReg.device_id))?.crossSigningVerified,
  async () => JSON.stringify(await queryKeys(aliceReg, aliceReg.user_id)));
// Bob's client tracks alice's devices: it learns of her new keys from device_lists.changed
// in its next /sync, not at once.
await until("bob sees alice's cross-signing keys", () => bob.getCrypto().userHasCrossSigningKeys(aliceReg.user_id, true));

step("alice: secret storage and key backup");
const recovery = await aliceCrypto.createRecoveryKeyFromPassphrase();
lastSSKey = recovery.privateKey;
await aliceCrypto.bootstrapSecretStorage({ createSecretStorageKey: async () => recovery, setupNewKeyBackup: true });
assert.ok(await aliceCrypto.isSecretStorageReady(), "secret storage ready");
const backupVersion = await aliceCrypto.getActiveSessionBackupVersion();
assert.ok(backupVersion, "key backup active");
await alice.sendTextMessage(roomId, "secret 3 from alice");
await waitDecrypted(bob, roomId, "secret 3 from alice", "bob");

// Wait until the backup on the server holds the room's sessions (both megolm sessions:
// Alice's outbound one and Bob's she received).
async function backedUpSessions() {
  const res = await fetch(`${baseUrl}/_matrix/client/v3/room_keys/keys?version=${backupVersion}`, { headers: { Authorization: `Bearer ${aliceReg.access_token}` } });
  assert.equal(res.status, 200);
  const body = await res.json();
  return Object.keys(body.rooms?.[roomId]?.sessions ?? {}).length;
}
{
  const deadline = Date.now() + 40000;
  while ((await backedUpSessions()) < 2) {
    if (Date.now() > deadline) throw new Error("backup never held the room's 2 sessions: " + (await backedUpSessions()));
    await new Promise((r) => setTimeout(r, 500));
  }
}
step("backup holds the sessions");

step("bob: cross-signing, then alice and bob verify each other (SAS, in-room)");
const bobCrypto = bob.getCrypto();
await bobCrypto.bootstrapCrossSigning({
  authUploadDeviceSigningKeys: async (makeRequest) => {
    await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: bobReg.user_id }, password: bobReg.password });
  },
});
await until("alice sees bob's cross-signing keys", () => aliceCrypto.userHasCrossSigningKeys(bobReg.user_id, true));
// Both sides confirm the short authentication string as soon as it is shown.
const confirmSas = (verifier) => verifier.on("show_sas", (sas) => sas.confirm());
// matrix-js-sdk hands an encrypted in-room request to its crypto only if the event is
// decrypted after the client emits it; when decryption wins that race the request is
// dropped silently (rust-crypto.js onLiveEventFromSync). So when bob's client shows no
// request, the test checks that the server did deliver it to his timeline (decrypted)
// and then asks again, as a user would; an undelivered request still fails the test.
const abandoned = new Set(); // transaction IDs of requests alice gave up on
const bobVerified = new Promise((resolve, reject) => {
  bob.on("crypto.verificationRequestReceived", async (request) => {
    try {
      await request.accept();
      await new Promise((r) => { const check = () => { if (request.verifier) { request.off("change", check); r(); } }; request.on("change", check); check(); });
      confirmSas(request.verifier);
      await request.verifier.verify();
      resolve();
    } catch (e) {
      if (!abandoned.has(request.transactionId)) reject(e);
    }
  });
});
const whenReady = (request, ms) => new Promise((resolve) => {
  const t = setTimeout(() => { request.off("change", check); resolve(false); }, ms);
  const check = () => { if (request.phase === 3 /* Ready */) { clearTimeout(t); request.off("change", check); resolve(true); } };
  request.on("change", check);
  check();
});
let request;
for (let attempt = 1; ; attempt++) {
  request = await aliceCrypto.requestVerificationDM(bobReg.user_id, roomId);
  if (await whenReady(request, 15000)) break;
  const seen = bob.getRoom(roomId)?.findEventById(request.transactionId);
  if (!seen || seen.getContent().msgtype !== "m.key.verification.request" || attempt === 3) {
    throw new Error(`bob never accepted verification request ${request.transactionId} (attempt ${attempt}): phase ${request.phase}, ` +
      (seen ? `in his timeline as ${seen.getType()}/${seen.getContent().msgtype}` : "not in his timeline"));
  }
  step(`bob's client received request ${request.transactionId} but did not raise it (matrix-js-sdk race); asking again`);
  abandoned.add(request.transactionId);
  await request.cancel().catch(() => {});
}
const aliceVerifier = await request.startVerification("m.sas.v1");
confirmSas(aliceVerifier);
await Promise.all([aliceVerifier.verify(), bobVerified]);
await until("alice trusts bob's identity", async () => (await aliceCrypto.getUserVerificationStatus(bobReg.user_id)).isCrossSigningVerified());
await until("bob trusts alice's identity", async () => (await bobCrypto.getUserVerificationStatus(aliceReg.user_id)).isCrossSigningVerified());
await until("bob trusts alice's device through cross-signing", async () => (await bobCrypto.getDeviceVerificationStatus(aliceReg.user_id, aliceReg.device_id))?.crossSigningVerified);

step("alice: second device restores the backup");
const loginClient = createClient({ baseUrl });
const login2 = await loginClient.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: aliceReg.user_id }, password: aliceReg.password, initial_device_display_name: "alice 2" });
ssKeys.clear(); // the new device only knows the recovery key (held by this script)
const alice2 = await started({ ...login2, user_id: aliceReg.user_id });
const alice2Crypto = alice2.getCrypto();
await waitFor("alice2 has the room", alice2, [ClientEvent.Room], () => !!alice2.getRoom(roomId));
const before = clearBodies(alice2, roomId);
assert.ok(!before.includes("secret 1 from alice"), "a new device cannot decrypt old messages before restoring: " + before);
await alice2Crypto.loadSessionBackupPrivateKeyFromSecretStorage();
const check = await alice2Crypto.checkKeyBackupAndEnable();
assert.ok(check?.backupInfo, "alice2 found the backup");
const restored = await alice2Crypto.restoreKeyBackup();
step(`restored ${restored.imported}/${restored.total} keys`);
assert.ok(restored.imported >= 2, "restored the room keys: " + JSON.stringify(restored));
// Events that failed to decrypt are retried when their keys arrive.
for (const body of ["secret 1 from alice", "secret 2 from bob", "secret 3 from alice"]) {
  await waitDecrypted(alice2, roomId, body, "alice2");
}
// alice2 can also cross-sign itself with the keys from secret storage, once its first
// /keys/query of its own user has told it the public cross-signing keys (the import
// checks the private keys against them).
await until("alice2 knows alice's cross-signing keys", async () => (await alice2Crypto.getCrossSigningStatus()).publicKeysOnDevice,
  async () => JSON.stringify(await alice2Crypto.getCrossSigningStatus()));
await alice2Crypto.bootstrapCrossSigning({});
await until("alice2 is cross-signed", async () => (await alice2Crypto.getDeviceVerificationStatus(aliceReg.user_id, login2.device_id))?.crossSigningVerified,
  async () => JSON.stringify(await alice2Crypto.getCrossSigningStatus()) + " " + JSON.stringify((await queryKeys(aliceReg, aliceReg.user_id)).device_keys));

step("carol joins later");
await alice.invite(roomId, carolReg.user_id);
const carol = await started(carolReg);
await waitFor("carol invited", carol, [ClientEvent.Room, RoomEvent.MyMembership], () => carol.getRoom(roomId)?.getMyMembership() === "invite");
await carol.joinRoom(roomId);
await waitJoined(alice, roomId, carolReg.user_id, "alice");
await waitJoined(bob, roomId, carolReg.user_id, "bob");
// Carol's client uploads its device keys in the background after it starts: the senders
// must know her device (through device_lists.changed if they queried her earlier) before
// they send, or their room key is not shared with it.
for (const [c, who] of [[alice, "alice"], [bob, "bob"]]) {
  await until(`${who} knows carol's device`, async () => (await c.getCrypto().getUserDeviceInfo([carolReg.user_id], true)).get(carolReg.user_id)?.has(carolReg.device_id));
}
await alice.sendTextMessage(roomId, "secret 4 from alice");
await bob.sendTextMessage(roomId, "secret 5 from bob");
await waitDecrypted(carol, roomId, "secret 4 from alice", "carol");
await waitDecrypted(carol, roomId, "secret 5 from bob", "carol");
await waitDecrypted(alice2, roomId, "secret 5 from bob", "alice2");
// The history from before Carol joined: visible to her (history_visibility shared) but
// encrypted with keys she never received.
const carolRoom = carol.getRoom(roomId);
while (carolRoom.getLiveTimeline().getState("b")?.paginationToken !== null && encEvents(carol, roomId).length < 5) {
  const n = encEvents(carol, roomId).length;
  await carol.scrollback(carolRoom, 30);
  if (encEvents(carol, roomId).length === n) break;
}
const old = encEvents(carol, roomId).filter((e) => !["secret 4 from alice", "secret 5 from bob"].includes(e.getClearContent()?.body));
step(`carol sees ${old.length} earlier encrypted events`);
assert.ok(old.length >= 3, "carol sees the earlier events (history visible since shared)");
await new Promise((r) => setTimeout(r, 1000));
for (const e of old) {
  assert.ok(e.isDecryptionFailure(), "carol must not decrypt an event from before she joined: " + JSON.stringify(e.getClearContent()));
}
step("carol: old events are decryption failures (" + old.map((e) => e.decryptionFailureReason).join(",") + ")");

step("alice: dehydrated device");
assert.ok(await aliceCrypto.isDehydrationSupported(), "the server supports MSC3814 dehydrated devices");
await aliceCrypto.startDehydration({ createNewKey: true });
const dehydrated = await (await fetch(`${baseUrl}/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`, { headers: { Authorization: `Bearer ${aliceReg.access_token}` } })).json();
assert.ok(dehydrated.device_id, "a dehydrated device is stored: " + JSON.stringify(dehydrated));
await until("bob knows alice's dehydrated device", async () => (await bob.getCrypto().getUserDeviceInfo([aliceReg.user_id], true)).get(aliceReg.user_id)?.has(dehydrated.device_id));
// Every device of Alice goes offline; Bob's next message reaches her dehydrated device only.
alice.stopClient();
alice2.stopClient();
await bob.sendTextMessage(roomId, "secret 6 from bob while alice is offline");
await waitDecrypted(carol, roomId, "secret 6 from bob while alice is offline", "carol");
const login3 = await loginClient.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: aliceReg.user_id }, password: aliceReg.password, initial_device_display_name: "alice 3" });
ssKeys.clear();
const alice3 = await started({ ...login3, user_id: aliceReg.user_id });
await waitFor("alice3 has the room", alice3, [ClientEvent.Room], () => !!alice3.getRoom(roomId));
await until("alice3 knows alice's cross-signing keys", async () => (await alice3.getCrypto().getCrossSigningStatus()).publicKeysOnDevice);
await alice3.getCrypto().bootstrapCrossSigning({}); // private keys from secret storage
let rehydratedRoomKeys = 0;
alice3.on("dehydration.RehydrationProgress", (roomKeys) => { rehydratedRoomKeys = roomKeys; });
await alice3.getCrypto().startDehydration(); // rehydrates: the dehydrated device's to-device inbox
await waitDecrypted(alice3, roomId, "secret 6 from bob while alice is offline", "alice3");
assert.ok(rehydratedRoomKeys >= 1, "room keys came from the dehydrated device's to-device inbox");
step(`alice3 decrypted, with ${rehydratedRoomKeys} room key(s) from the rehydrated device, a message sent while alice was offline`);

for (const c of [alice3, bob, carol]) c.stopClient();
step("ok");
process.exit(0);
