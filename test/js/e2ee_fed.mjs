// End-to-end encryption across two homeservers with matrix-js-sdk and its Rust crypto:
// Alice (server A) creates an encrypted room and invites Bob (server B, a remote
// invite); Bob joins over federation; both keep their normal sync loops running and
// each decrypts the other's messages. Device lists, /keys/query, /keys/claim and the
// Olm to-device room keys all travel over federation between A and B.
// Usage: node e2ee_fed.mjs <A's client URL> <B's client URL>
import "./polyfill.mjs";
import { createClient, ClientEvent, RoomEvent, RoomMemberEvent } from "matrix-js-sdk";
import { register, started, waitFor as waitForWithin, encEvents, waitDecrypted as waitDecryptedWithin } from "./e2ee_lib.mjs";
import assert from "node:assert/strict";

const [urlA, urlB] = process.argv.slice(2);
const step = (s) => process.stdout.write(`[${new Date().toISOString()}] ${s}\n`);
if (!process.env.E2EE_DEBUG) console.debug = console.info = console.log = () => {};
setTimeout(() => { console.error("e2ee_fed.mjs: overall timeout"); process.exit(2); }, 150000).unref();

// Federation is slower than one server: wait up to 45 s.
const waitFor = (what, emitter, events, check, ms = 45000) => waitForWithin(what, emitter, events, check, ms);
const waitDecrypted = (c, roomId, body, who) => waitDecryptedWithin(c, roomId, body, who, 45000);

step("register alice on A, bob on B");
const aliceReg = await register(urlA, "alice");
const bobReg = await register(urlB, "bob");
assert.notEqual(aliceReg.user_id.split(":").slice(1).join(":"), bobReg.user_id.split(":").slice(1).join(":"), "users on different servers");
const alice = await started(aliceReg);
const bob = await started(bobReg);

step("alice creates an encrypted room on A and invites bob (remote invite)");
const { room_id: roomId } = await alice.createRoom({
  preset: "private_chat",
  name: "E2EE across servers",
  invite: [bobReg.user_id],
  initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
});
await waitFor("bob's invite on B", bob, [ClientEvent.Room, RoomEvent.MyMembership], () => bob.getRoom(roomId)?.getMyMembership() === "invite");
step("bob joins over federation");
await bob.joinRoom(roomId);
await waitFor("alice sees bob joined", alice, [RoomMemberEvent.Membership, ClientEvent.Room], () => alice.getRoom(roomId)?.getMember(bobReg.user_id)?.membership === "join");
await waitFor("bob's room is encrypted", bob, [RoomEvent.Timeline, ClientEvent.Room], () => bob.getRoom(roomId)?.hasEncryptionStateEvent());

step("alice -> bob");
await alice.sendTextMessage(roomId, "secret 1 from alice on A");
await waitDecrypted(bob, roomId, "secret 1 from alice on A", "bob");
const ev1 = encEvents(bob, roomId).find((e) => e.getClearContent()?.body === "secret 1 from alice on A");
assert.equal(ev1.getWireContent().algorithm, "m.megolm.v1.aes-sha2", "sent with megolm");
assert.equal(ev1.getWireContent().body, undefined, "no plaintext on the wire");

step("bob -> alice");
await bob.sendTextMessage(roomId, "secret 2 from bob on B");
await waitDecrypted(alice, roomId, "secret 2 from bob on B", "alice");

// Each side learned the other's device over federation.
const bobSeesAlice = (await bob.getCrypto().getUserDeviceInfo([aliceReg.user_id], true)).get(aliceReg.user_id);
assert.ok(bobSeesAlice?.has(aliceReg.device_id), "bob knows alice's device");
const aliceSeesBob = (await alice.getCrypto().getUserDeviceInfo([bobReg.user_id], true)).get(bobReg.user_id);
assert.ok(aliceSeesBob?.has(bobReg.device_id), "alice knows bob's device");

step("bob logs in a second device on B; alice's next message reaches it (device list update over federation)");
const login2 = await createClient({ baseUrl: urlB }).loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: bobReg.user_id }, password: "pw-" + bobReg.user_id.slice(1).split(":")[0], initial_device_display_name: "bob 2" });
const bob2 = await started({ ...login2, user_id: bobReg.user_id, baseUrl: urlB });
await waitFor("bob2 has the room", bob2, [ClientEvent.Room], () => !!bob2.getRoom(roomId));
{
  const deadline = Date.now() + 45000;
  while (!(await alice.getCrypto().getUserDeviceInfo([bobReg.user_id], true)).get(bobReg.user_id)?.has(login2.device_id)) {
    if (Date.now() > deadline) throw new Error("alice never learned bob's second device");
    await new Promise((r) => setTimeout(r, 300));
  }
}
await alice.sendTextMessage(roomId, "secret 3 from alice on A");
await waitDecrypted(bob2, roomId, "secret 3 from alice on A", "bob2");
await waitDecrypted(bob, roomId, "secret 3 from alice on A", "bob");

for (const c of [alice, bob, bob2]) c.stopClient();
step("ok");
process.exit(0);
