// The seed's browser stack against ringcast, unchanged: `sockjs-client` 1.6 carrying
// `stompjs` 2.3.3 (`Stomp.over(sock)`), and `@stomp/stompjs` 7 over `new SockJS(url)`, on
// Spring's endpoint `/msg-center/dfocus` with the seed's destinations
// (`/topic/{projectId}/{topic}`, `/user/queue/{projectId}`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import SockJS from 'sockjs-client';
import Stomp from 'stompjs';
import { Client } from '@stomp/stompjs';
import { startServer } from './harness.mjs';
import { authConfig, token } from './stomp-helpers.mjs';

const ENDPOINT = '/msg-center/dfocus';
const LEGACY = '\n[stomp]\nlegacy_destinations = true\n[sockjs]\nendpoints = ["/msg-center/dfocus"]\n';

function adminPublish(s, body) {
  return JSON.parse(execFileSync('curl', ['-s', '--unix-socket', s.sock, 'http://x/publish', '-d', JSON.stringify(body)],
    { encoding: 'utf8' }));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, ms = 5000) {
  for (let i = 0; i < ms / 20 && !cond(); i++) await sleep(20);
  return cond();
}

// stomp.js 2.3.3 as the seed's pages use it: Stomp.over(new SockJS(url)), connect(headers, ok, err).
function legacyConnect(url, transports, headers, heartbeat = 10000) {
  const sock = new SockJS(url, null, { transports });
  const client = Stomp.over(sock);
  client.debug = null;
  client.heartbeat.outgoing = heartbeat;
  client.heartbeat.incoming = heartbeat;
  return new Promise((resolve, reject) => {
    client.connect(headers, (frame) => resolve({ client, frame, sock }), (err) => reject(err));
  });
}

for (const transports of [['websocket'], ['xhr-streaming'], ['xhr-polling'], ['eventsource']]) {
  test(`sockjs-client (${transports}) + stompjs 2.3.3: topic and user pushes, the seed's destinations`, async () => {
    const cfg = authConfig(LEGACY);
    const s = await startServer(['--config', cfg, '--shards', '2']);
    try {
      const url = `http://127.0.0.1:${s.port}${ENDPOINT}`;
      const { client, frame, sock } = await legacyConnect(url, transports,
        { token: token(cfg, 'fm', 'alice'), projectId: 'fm' });
      assert.equal(sock.transport, transports[0]);
      assert.equal(frame.headers['user-name'], 'alice');
      const topic = [];
      const user = [];
      client.subscribe('/topic/fm/news', (m) => topic.push(m));
      client.subscribe('/user/queue/fm', (m) => user.push(m), { receipt: 'r1' });
      await until(() => false, 200);
      assert.deepEqual(adminPublish(s, { project: 'fm', destination: '/topic/news', body: 'héllo "sockjs"\n\u2028' }),
        { sessions: 1 });
      assert.deepEqual(adminPublish(s, { project: 'fm', user: 'alice', destination: '/queue/fm', body: '{"to":"alice"}' }),
        { sessions: 1 });
      assert.ok(await until(() => topic.length === 1 && user.length === 1));
      assert.equal(topic[0].body, 'héllo "sockjs"\n\u2028');
      assert.equal(topic[0].headers.destination, '/topic/fm/news');
      assert.equal(user[0].body, '{"to":"alice"}');
      const sessions = JSON.parse(execFileSync('curl', ['-s', '--unix-socket', s.sock, 'http://x/sessions?project=fm'], { encoding: 'utf8' }));
      assert.equal(sessions.sessions[0].protocol, 'sockjs');
      await new Promise((r) => client.disconnect(r));
    } finally {
      await s.stop();
    }
  });

  test(`sockjs-client (${transports}): a bad token gets ERROR message:auth_fail`, async () => {
    const cfg = authConfig(LEGACY);
    const s = await startServer(['--config', cfg]);
    try {
      const url = `http://127.0.0.1:${s.port}${ENDPOINT}`;
      const err = await legacyConnect(url, transports, { token: 'not-a-jwt', projectId: 'fm' }).then(
        () => assert.fail('connected with a bad token'), (e) => e);
      assert.equal(err.command, 'ERROR');
      assert.equal(err.headers.message, 'auth_fail');
    } finally {
      await s.stop();
    }
  });
}

test('every transport: 10 s STOMP heart-beats keep a quiet session alive for 30 s', { timeout: 90000 }, async () => {
  const cfg = authConfig(LEGACY);
  const s = await startServer(['--config', cfg, '--shards', '2']);
  try {
    const url = `http://127.0.0.1:${s.port}${ENDPOINT}`;
    const transports = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource'];
    const sessions = await Promise.all(transports.map(async (t, i) => {
      const { client, sock } = await legacyConnect(url, [t], { token: token(cfg, 'fm', `bob${i}`), projectId: 'fm' });
      const state = { client, closed: false, got: [] };
      sock.addEventListener('close', () => { state.closed = true; });
      client.subscribe('/topic/fm/late', (m) => state.got.push(m.body));
      return state;
    }));
    await sleep(30000);
    assert.deepEqual(sessions.map((x) => x.closed), [false, false, false, false]);
    assert.deepEqual(adminPublish(s, { project: 'fm', destination: '/topic/late', body: 'still here' }), { sessions: 4 });
    assert.ok(await until(() => sessions.every((x) => x.got.length === 1)));
    for (const x of sessions) await new Promise((r) => x.client.disconnect(r));
  } finally {
    await s.stop();
  }
});

test('@stomp/stompjs 7 over new SockJS(url) on the regular /ws path', async () => {
  const cfg = authConfig();
  const s = await startServer(['--config', cfg]);
  try {
    const frame = await new Promise((resolve, reject) => {
      const c = new Client({
        webSocketFactory: () => new SockJS(`http://127.0.0.1:${s.port}/ws`, null, { transports: ['websocket'] }),
        connectHeaders: { token: token(cfg, 'fm', 'carol'), projectId: 'fm' },
        reconnectDelay: 0,
        onConnect: (f) => resolve({ c, f }),
        onStompError: (f) => reject(new Error(f.headers.message)),
      });
      c.activate();
    });
    const got = [];
    frame.c.subscribe('/topic/news', (m) => got.push(m));
    await sleep(200);
    assert.deepEqual(adminPublish(s, { project: 'fm', destination: '/topic/news', body: 'via stompjs 7',
      headers: { 'x-trace': 't1' } }), { sessions: 1 });
    assert.ok(await until(() => got.length === 1));
    assert.equal(got[0].body, 'via stompjs 7');
    assert.equal(got[0].headers['x-trace'], 't1');
    await frame.c.deactivate();
  } finally {
    await s.stop();
  }
});
