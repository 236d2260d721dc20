// Two matrix-js-sdk clients running their normal sync loop against Myelin see each
// other's messages, typing, receipts, read markers and a room name change; a client
// that was offline while 50 messages arrived catches up with a limited timeline and
// back-paginates the gap with no duplicates and no holes.
// Usage: node sync.mjs <homeserver URL>
import "./polyfill.mjs";
import { createClient, ClientEvent, RoomEvent, RoomMemberEvent } from "matrix-js-sdk";
import assert from "node:assert/strict";
import { register as registerAt, startSyncing, waitFor } from "./e2ee_lib.mjs";

const baseUrl = process.argv[2];

const register = (name) => registerAt(baseUrl, name);

function client(reg) {
  return createClient({ baseUrl, userId: reg.user_id, accessToken: reg.access_token, deviceId: reg.device_id });
}

const started = (c) => startSyncing(c, 10);

const aliceReg = await register("alice");
const bobReg = await register("bob");
const alice = await started(client(aliceReg));
const bob = await started(client(bobReg));

const { room_id: roomId } = await alice.createRoom({ preset: "public_chat", name: "JS sync room" });
await bob.joinRoom(roomId);
await waitFor("bob in the room", bob, [ClientEvent.Room, RoomEvent.MyMembership], () => bob.getRoom(roomId)?.getMyMembership() === "join");
await waitFor("alice sees bob join", alice, [RoomMemberEvent.Membership], () => alice.getRoom(roomId)?.getMember(bobReg.user_id)?.membership === "join");

// Messages.
const { event_id: helloId } = await alice.sendTextMessage(roomId, "hello bob");
const bobRoom = () => bob.getRoom(roomId);
const bodies = (room) => room.getLiveTimeline().getEvents().filter((e) => e.getType() === "m.room.message").map((e) => e.getContent().body);
await waitFor("bob gets the message", bob, [RoomEvent.Timeline], () => bodies(bobRoom()).includes("hello bob"));

// Typing.
await bob.sendTyping(roomId, true, 20000);
await waitFor("alice sees bob typing", alice, [RoomMemberEvent.Typing], () => alice.getRoom(roomId).getMember(bobReg.user_id)?.typing === true);
await bob.sendTyping(roomId, false);
await waitFor("alice sees bob stop typing", alice, [RoomMemberEvent.Typing], () => alice.getRoom(roomId).getMember(bobReg.user_id)?.typing === false);

// Receipts and read markers.
const helloEv = bobRoom().findEventById(helloId);
assert.ok(helloEv, "bob has the event");
await bob.sendReadReceipt(helloEv);
await waitFor("alice sees bob's receipt", alice, [RoomEvent.Receipt], () => alice.getRoom(roomId).getUsersReadUpTo(alice.getRoom(roomId).findEventById(helloId)).includes(bobReg.user_id));
await bob.setRoomReadMarkers(roomId, helloId);
await waitFor("bob's fully_read marker", bob, [RoomEvent.AccountData], () => bobRoom().getAccountData("m.fully_read")?.getContent().event_id === helloId);

// Room name change.
await alice.setRoomName(roomId, "Renamed by alice");
await waitFor("bob sees the new name", bob, [RoomEvent.Name], () => bobRoom().name === "Renamed by alice");

// Bob goes offline; 50 messages arrive; a new session of bob catches up.
bob.stopClient();
const want = ["hello bob"];
for (let i = 0; i < 50; i++) {
  const body = `catch-up ${String(i).padStart(2, "0")}`;
  await alice.sendTextMessage(roomId, body);
  want.push(body);
}
const bob2 = await started(client(bobReg));
const room2 = bob2.getRoom(roomId);
assert.ok(room2, "room after catch-up");
const initial = bodies(room2);
assert.ok(initial.length <= 10, `initial timeline holds ${initial.length} messages`);
assert.deepEqual(initial, want.slice(want.length - initial.length), "newest messages first");
for (let i = 0; i < 30 && room2.getLiveTimeline().getPaginationToken("b") !== null; i++) {
  await bob2.scrollback(room2, 15);
  if (room2.getLiveTimeline().getEvents().some((e) => e.getType() === "m.room.create")) break;
}
const ids = room2.getLiveTimeline().getEvents().map((e) => e.getId());
assert.equal(new Set(ids).size, ids.length, "duplicate events after back-pagination");
assert.deepEqual(bodies(room2), want, "back-pagination left a hole or disorder");
assert.ok(room2.getLiveTimeline().getEvents().some((e) => e.getType() === "m.room.create"), "reached the room's start");

alice.stopClient();
bob2.stopClient();
console.log("sync.mjs: ok");
process.exit(0);
