// Helpers shared by the end-to-end encryption scenarios (e2ee.mjs, e2ee_fed.mjs): users,
// clients with the Rust crypto running their normal sync loop, and waiting for what a
// client decrypts. sync.mjs uses register, startSyncing and waitFor too.
import { createClient, ClientEvent, RoomEvent, MatrixEventEvent } from "matrix-js-sdk";

const stamp = Date.now();

// register creates a user on the homeserver at baseUrl (dummy auth when it is asked for)
// and returns the registration answer with the password and baseUrl.
export async function register(baseUrl, name) {
  const anon = createClient({ baseUrl });
  const username = `${name}-${stamp}`;
  const password = "pw-" + username;
  let reg;
  try {
    reg = await anon.registerRequest({ username, password });
  } catch (e) {
    reg = await anon.registerRequest({ username, password, auth: { type: "m.login.dummy", session: e.data.session } });
  }
  return { ...reg, password, baseUrl };
}

// startSyncing starts c's sync loop and resolves with c once its first sync is done.
export async function startSyncing(c, initialSyncLimit) {
  const ready = new Promise((resolve) => {
    const onSync = (state) => {
      if (state === "PREPARED" || state === "SYNCING") {
        c.removeListener(ClientEvent.Sync, onSync);
        resolve();
      }
    };
    c.on(ClientEvent.Sync, onSync);
  });
  await c.startClient({ initialSyncLimit });
  await ready;
  return c;
}

// started returns a client for a logged-in device (reg: baseUrl, user_id, access_token,
// device_id) with its crypto initialised and its first sync done.
// It also waits until the server holds the device's keys: the client uploads them after
// its first sync, and a message another client encrypts before then never becomes
// readable here (the Rust crypto shares a session with a new device only from its
// current index), which on a loaded machine made the first message of a test flaky.
export async function started(reg, cryptoCallbacks) {
  const c = createClient({ baseUrl: reg.baseUrl, userId: reg.user_id, accessToken: reg.access_token, deviceId: reg.device_id, cryptoCallbacks });
  await c.initRustCrypto({ useIndexedDB: false });
  await startSyncing(c, 30);
  const deadline = Date.now() + 30000;
  for (;;) {
    const res = await fetch(`${reg.baseUrl}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: { Authorization: `Bearer ${reg.access_token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ device_keys: { [reg.user_id]: [reg.device_id] } }),
    });
    if (res.ok && (await res.json()).device_keys?.[reg.user_id]?.[reg.device_id]) return c;
    if (Date.now() > deadline) throw new Error(`device ${reg.device_id} of ${reg.user_id} never uploaded its keys`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// waitFor resolves once check() is true, re-checked on the emitter's events and every
// 250 ms (some state, like decryption results, changes without an event on it).
export function waitFor(what, emitter, events, check, ms = 30000) {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err) => { if (done) return; done = true; clearTimeout(timer); clearInterval(poll); for (const e of events) emitter.removeListener(e, handler); err ? reject(err) : resolve(); };
    const timer = setTimeout(() => finish(new Error("timed out waiting for " + what)), ms);
    const handler = () => { try { if (check()) finish(); } catch (e) { finish(e); } };
    const poll = setInterval(handler, 250);
    for (const e of events) emitter.on(e, handler);
    handler();
  });
}

// The encrypted events of a room's live timeline, and the bodies decrypted so far.
export const encEvents = (c, roomId) => (c.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []).filter((e) => e.isEncrypted());
export const clearBodies = (c, roomId) => encEvents(c, roomId).filter((e) => !e.isDecryptionFailure() && e.getClearContent()).map((e) => e.getClearContent().body);

// waitDecrypted resolves once the client has decrypted a message with this body.
export async function waitDecrypted(c, roomId, body, who, ms = 30000) {
  await waitFor(`${who} decrypts "${body}"`, c, [RoomEvent.Timeline, MatrixEventEvent.Decrypted], () => clearBodies(c, roomId).includes(body), ms);
}
