// matrix-js-sdk (Rust crypto) talks to a mautrix-go bot (pure-Go crypto) run by
// test/e2ee_goolm_test.go: Alice creates an encrypted room, invites the bot, waits for
// it to join, sends an encrypted message, and decrypts the bot's encrypted reply.
// Usage: node e2ee_bot.mjs <homeserver URL> <bot user ID>
import "./polyfill.mjs";
import { createClient, ClientEvent, RoomEvent, RoomMemberEvent, MatrixEventEvent } from "matrix-js-sdk";
import assert from "node:assert/strict";

const [baseUrl, botId] = process.argv.slice(2);
const step = (s) => process.stdout.write(`[${new Date().toISOString()}] ${s}\n`);
if (!process.env.E2EE_DEBUG) console.debug = console.info = console.log = () => {};
setTimeout(() => { console.error("e2ee_bot.mjs: overall timeout"); process.exit(2); }, 90000).unref();

const anon = createClient({ baseUrl });
const username = `jsalice-${Date.now()}`;
let reg;
try {
  reg = await anon.registerRequest({ username, password: "pw-" + username });
} catch (e) {
  reg = await anon.registerRequest({ username, password: "pw-" + username, auth: { type: "m.login.dummy", session: e.data.session } });
}
const alice = createClient({ baseUrl, userId: reg.user_id, accessToken: reg.access_token, deviceId: reg.device_id });
await alice.initRustCrypto({ useIndexedDB: false });
const ready = new Promise((resolve) => alice.on(ClientEvent.Sync, (s) => (s === "PREPARED" || s === "SYNCING") && resolve()));
await alice.startClient({ initialSyncLimit: 20 });
await ready;

function waitFor(what, events, check, ms = 40000) {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err) => { if (done) return; done = true; clearTimeout(timer); clearInterval(poll); for (const e of events) alice.removeListener(e, handler); err ? reject(err) : resolve(); };
    const timer = setTimeout(() => finish(new Error("timed out waiting for " + what)), ms);
    const handler = () => { try { if (check()) finish(); } catch (e) { finish(e); } };
    const poll = setInterval(handler, 250);
    for (const e of events) alice.on(e, handler);
    handler();
  });
}

step("create an encrypted room and invite the bot");
const { room_id: roomId } = await alice.createRoom({
  preset: "private_chat",
  invite: [botId],
  initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
});
await waitFor("the bot joins", [RoomMemberEvent.Membership], () => alice.getRoom(roomId)?.getMember(botId)?.membership === "join");
step("bot joined; send");
await alice.sendTextMessage(roomId, "hello bot from js");
const reply = () => alice.getRoom(roomId).getLiveTimeline().getEvents().find((e) => e.isEncrypted() && e.getSender() === botId && e.getClearContent()?.body);
await waitFor("the bot's reply", [RoomEvent.Timeline, MatrixEventEvent.Decrypted], () => !!reply());
assert.equal(reply().getClearContent().body, "hello js, from the bot");
step("decrypted the bot's reply");
alice.stopClient();
process.exit(0);
