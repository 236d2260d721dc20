// Uploads and downloads media with matrix-js-sdk, as Element Web does.
// Usage: node media.mjs <homeserver URL>
import "./polyfill.mjs";
import { createClient } from "matrix-js-sdk";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

const baseUrl = process.argv[2];
const username = `jsmedia-${Date.now()}`;
const password = "correct horse battery staple";

const anon = createClient({ baseUrl });
let reg;
try {
  reg = await anon.registerRequest({ username, password });
  assert.fail("expected a UIA challenge");
} catch (e) {
  assert.equal(e.httpStatus, 401);
  reg = await anon.registerRequest({ username, password, auth: { type: "m.login.dummy", session: e.data.session } });
}
const client = createClient({ baseUrl, userId: reg.user_id, accessToken: reg.access_token, deviceId: reg.device_id });

async function download(mxc) {
  // Authenticated media (v1.11): the token goes in the Authorization header.
  const url = client.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true);
  assert.ok(url && url.includes("/_matrix/client/v1/media/download/"), `download URL ${url}`);
  const res = await fetch(url, { headers: { Authorization: `Bearer ${reg.access_token}` } });
  assert.equal(res.status, 200, `download ${mxc}: ${res.status}`);
  return { res, body: Buffer.from(await res.arrayBuffer()) };
}

// A text file keeps its type and name.
const text = Buffer.from("hello from matrix-js-sdk\n");
const up = await client.uploadContent(text, { type: "text/plain", name: "hello.txt" });
assert.match(up.content_uri, /^mxc:\/\/[^/]+\/[A-Za-z0-9]+$/);
let { res, body } = await download(up.content_uri);
assert.deepEqual(body, text);
assert.equal(res.headers.get("content-type"), "text/plain");
assert.equal(res.headers.get("content-disposition"), "inline; filename=hello.txt");

// An encrypted attachment (random bytes, application/octet-stream) comes back byte-identical.
const blob = randomBytes(200_000);
const enc = await client.uploadContent(blob, { type: "application/octet-stream", name: "" });
({ res, body } = await download(enc.content_uri));
assert.ok(body.equals(blob), "encrypted blob differs");
assert.equal(res.headers.get("content-type"), "application/octet-stream");
assert.ok(res.headers.get("content-disposition").startsWith("attachment"));

const config = await client.getMediaConfig(true);
assert.ok(config["m.upload.size"] > 0, JSON.stringify(config));
console.log("media.mjs: ok");
