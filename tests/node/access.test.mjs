// Topic permissions and token expiry with real clients: @stomp/stompjs sessions and raw `ws`
// clients against projects whose topics are open by the token's channels claim, or by a real
// backend (a small HTTP server in this test) that may also be down or slow; tokens that
// expire mid-session with and without a refresh; a key shared by two projects, each binding
// its tokens to itself.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import WebSocket from 'ws';
import { Client } from '@stomp/stompjs';
import { startServer, BIN } from './harness.mjs';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The backend: allows a topic unless it starts with "secret", never answers for "slow…".
const asked = [];
const backend = createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    const q = JSON.parse(body);
    asked.push(q);
    if (q.topic.startsWith('slow')) return; // never answers: the server's timeout decides
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(q.topic.startsWith('secret')
      ? { allow: false, reason: `${q.user} may not read ${q.topic}` } : { allow: true }));
  });
});
await new Promise((r) => backend.listen(0, '127.0.0.1', r));
const backendUrl = `http://127.0.0.1:${backend.address().port}/subscribe`;
after(() => backend.close());

const config = join(mkdtempSync(join(tmpdir(), 'ringcast-access-')), 'ringcast.toml');
writeFileSync(config, `
[auth]
enabled = true
proxy_timeout_ms = 500

[projects.claimed]
jwt_secret = "claimed-secret-0123456789"
subscribe = "claim"
publish = "claim"

[projects.proxied]
jwt_secret = "proxied-secret-0123456789"
subscribe = "proxy"
subscribe_proxy = "${backendUrl}"

[projects.down]
jwt_secret = "down-secret-0123456789"
subscribe = "proxy"
subscribe_proxy = "http://127.0.0.1:9/nobody-listens"

[projects.a]
jwt_secret = "shared-secret-0123456789"
project_claim = "projectId"

[projects.b]
jwt_secret = "shared-secret-0123456789"
project_claim = "projectId"
`);

function token(project, user, { ttl = '1h', channels } = {}) {
  const args = ['token', '--config', config, '--project', project, '--user', user, '--ttl', ttl];
  if (channels) args.push('--channels', channels.join(','));
  return execFileSync(BIN, args, { encoding: 'utf8' }).trim();
}

function stomp(url, project, tok) {
  return new Promise((resolve, reject) => {
    const errors = [];
    const client = new Client({
      webSocketFactory: () => new WebSocket(`${url}/ws`, ['v12.stomp']),
      connectHeaders: { token: tok, projectId: project },
      reconnectDelay: 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      onConnect: () => resolve({ client, errors }),
      onStompError: (f) => { errors.push(f); reject(Object.assign(new Error(f.headers.message), { frame: f })); },
    });
    client.activate();
  });
}

function receipt(client, id) {
  return new Promise((r) => client.watchForReceipt(id, r));
}

async function until(cond, ms = 5000) {
  for (let i = 0; i < ms / 20 && !cond(); i++) await sleep(20);
  return cond();
}

test('claim: the token lists what a session may read and send', async () => {
  const s = await startServer(['--config', config]);
  try {
    const { client, errors } = await stomp(s.url, 'claimed', token('claimed', 'ann', { channels: ['news.*', 'orders.7'] }));
    const got = [];
    client.subscribe('/topic/orders.7', (m) => got.push(m.body));
    const r = receipt(client, 'r1');
    client.subscribe('/topic/news.eu', (m) => got.push(m.body), { receipt: 'r1' });
    await r;
    assert.equal(s.push('news.eu', 'allowed', 'claimed'), 1);
    assert.ok(await until(() => got.length === 1));
    client.subscribe('/topic/orders.8', () => {}, { receipt: 'r2' });
    assert.ok(await until(() => errors.length === 1));
    assert.equal(errors[0].headers.message, 'forbidden');
    assert.equal(errors[0].headers['receipt-id'], 'r2');
    assert.match(errors[0].body, /subscribe orders\.8: the token's channels claim does not grant it/);
    await client.deactivate();
    // SEND follows the same claim: allowed on a granted topic, refused on another.
    const writer = await stomp(s.url, 'claimed', token('claimed', 'amy', { channels: ['news.*'] }));
    const readerGot = [];
    const reader = await stomp(s.url, 'claimed', token('claimed', 'abe', { channels: ['news.*'] }));
    const rr = receipt(reader.client, 'sub');
    reader.client.subscribe('/topic/news.us', (m) => readerGot.push(m.body), { receipt: 'sub' });
    await rr;
    writer.client.publish({ destination: '/topic/news.us', body: 'from a client' });
    assert.ok(await until(() => readerGot.length === 1));
    writer.client.publish({ destination: '/topic/orders.1', body: 'not mine' });
    assert.ok(await until(() => writer.errors.length === 1));
    assert.equal(writer.errors[0].headers.message, 'forbidden');
    assert.match(writer.errors[0].body, /publish orders\.1/);
    await reader.client.deactivate();
    // Raw mode: refused at the upgrade with 403 and the reason.
    const status = await new Promise((resolve) => {
      const ws = new WebSocket(`${s.url}/ws?project=claimed&topic=orders.8&token=${token('claimed', 'ann', { channels: ['news.*'] })}`);
      ws.on('unexpected-response', (_, res) => resolve(res.statusCode));
      ws.on('open', () => resolve(101));
    });
    assert.equal(status, 403);
  } finally {
    await s.stop();
  }
});

test('proxy: a real backend decides, down and slow backends mean no', async () => {
  const s = await startServer(['--config', config]);
  try {
    const { client, errors } = await stomp(s.url, 'proxied', token('proxied', 'ben'));
    const got = [];
    const r = receipt(client, 'ok');
    client.subscribe('/topic/orders.1', (m) => got.push(m.body), { receipt: 'ok' });
    await r;
    assert.deepEqual(asked.at(-1), { project: 'proxied', user: 'ben', topic: 'orders.1', action: 'subscribe' });
    assert.equal(s.push('orders.1', 'hello', 'proxied'), 1);
    assert.ok(await until(() => got.length === 1));
    client.subscribe('/topic/secret.1', () => {}, { receipt: 'no' });
    assert.ok(await until(() => errors.length === 1));
    assert.equal(errors[0].headers.message, 'forbidden');
    assert.match(errors[0].body, /ben may not read secret\.1/);

    const slow = await stomp(s.url, 'proxied', token('proxied', 'cid'));
    const t0 = Date.now();
    slow.client.subscribe('/topic/slow.1', () => {});
    assert.ok(await until(() => slow.errors.length === 1));
    assert.match(slow.errors[0].body, /did not answer within 500 ms/);
    assert.ok(Date.now() - t0 < 3000);

    const down = await stomp(s.url, 'down', token('down', 'dan'));
    down.client.subscribe('/topic/x', () => {});
    assert.ok(await until(() => down.errors.length === 1));
    assert.match(down.errors[0].body, /unreachable/);

    // Raw mode: the upgrade goes through, the topic waits for the backend.
    const raw = new WebSocket(`${s.url}/ws?project=proxied&topic=orders.2&topic=secret.2&token=${token('proxied', 'eva')}`);
    const closed = new Promise((r) => raw.on('close', (code, reason) => r([code, reason.toString()])));
    const [code, reason] = await closed;
    assert.equal(code, 4003);
    assert.match(reason, /forbidden: subscribe secret\.2/);
  } finally {
    await s.stop();
  }
});

test('tokens expire mid-session unless refreshed', async () => {
  const s = await startServer(['--config', config]);
  try {
    const goes = await stomp(s.url, 'a', token('a', 'fay', { ttl: '2s' }));
    const stays = await stomp(s.url, 'a', token('a', 'gus', { ttl: '2s' }));
    const r = receipt(stays.client, 'fresh');
    stays.client.publish({ destination: '/app/refresh', headers: { token: token('a', 'gus', { ttl: '1h' }), receipt: 'fresh' } });
    await r;
    assert.ok(await until(() => goes.errors.length === 1, 6000));
    assert.equal(goes.errors[0].headers.message, 'token_expired');
    await sleep(1000);
    assert.equal(stays.errors.length, 0);
    assert.ok(stays.client.connected);
    await stays.client.deactivate();
    // Raw: closed with 4001 unless {"refresh": …} came first.
    const raw = (tok) => new WebSocket(`${s.url}/ws?project=a&topic=t&token=${tok}`);
    const rawGoes = raw(token('a', 'hal', { ttl: '2s' }));
    const rawStays = raw(token('a', 'ida', { ttl: '2s' }));
    await new Promise((r) => rawStays.on('open', r));
    const reply = new Promise((r) => rawStays.once('message', (m) => r(JSON.parse(m.toString()))));
    rawStays.send(JSON.stringify({ refresh: token('a', 'ida', { ttl: '1h' }) }));
    assert.ok((await reply).refreshed > 0);
    const [code] = await new Promise((r) => rawGoes.on('close', (c, why) => r([c, why.toString()])));
    assert.equal(code, 4001);
    await sleep(500);
    assert.equal(rawStays.readyState, WebSocket.OPEN);
    rawStays.close();
  } finally {
    await s.stop();
  }
});

test('a key shared by two projects opens only the one the token names', async () => {
  const s = await startServer(['--config', config]);
  try {
    await stomp(s.url, 'a', token('a', 'jo')).then(({ client }) => client.deactivate());
    const err = await stomp(s.url, 'b', token('a', 'jo')).then(() => null, (e) => e.frame);
    assert.equal(err.headers.message, 'auth_fail');
    assert.match(err.body, /"projectId" claim does not name project "b"/);
  } finally {
    await s.stop();
  }
});
