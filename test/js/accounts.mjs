// Drives Myelin's account endpoints with matrix-js-sdk, as a browser client would.
// Usage: node accounts.mjs <homeserver URL>
import "./polyfill.mjs";
import { createClient } from "matrix-js-sdk";
import assert from "node:assert/strict";

const baseUrl = process.argv[2];
const username = `js-${Date.now()}`;
const password = "correct horse battery staple";

const anon = createClient({ baseUrl });
// The first call without auth yields the UIA flows; m.login.dummy completes registration.
let reg;
try {
  reg = await anon.registerRequest({ username, password });
  assert.fail("registration without auth should return a UIA challenge");
} catch (e) {
  assert.equal(e.httpStatus, 401);
  assert.ok(e.data.flows.some((f) => f.stages.includes("m.login.dummy")), JSON.stringify(e.data));
  reg = await anon.registerRequest({ username, password, auth: { type: "m.login.dummy", session: e.data.session } });
}
assert.match(reg.user_id, new RegExp(`^@${username}:`));
assert.ok(reg.access_token && reg.device_id);

const login = await anon.loginRequest({
  type: "m.login.password",
  identifier: { type: "m.id.user", user: username },
  password,
  initial_device_display_name: "js-sdk test",
});
assert.equal(login.user_id, reg.user_id);
assert.notEqual(login.device_id, reg.device_id);

const client = createClient({ baseUrl, userId: login.user_id, accessToken: login.access_token, deviceId: login.device_id });
const who = await client.whoami();
assert.equal(who.user_id, login.user_id);
assert.equal(who.device_id, login.device_id);

await client.setDisplayName("Jay Ess");
const profile = await client.getProfileInfo(login.user_id);
assert.equal(profile.displayname, "Jay Ess");

const { devices } = await client.getDevices();
assert.deepEqual(devices.map((d) => d.device_id).sort(), [reg.device_id, login.device_id].sort());
assert.equal(devices.find((d) => d.device_id === login.device_id).display_name, "js-sdk test");

await client.logout(true);
try {
  await client.whoami();
  assert.fail("token still valid after logout");
} catch (e) {
  assert.equal(e.errcode, "M_UNKNOWN_TOKEN");
}
console.log("accounts.mjs: ok");
