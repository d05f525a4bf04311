// History and recovery (issue #17) with @stomp/stompjs over Node `ws`: a client that was away
// for 50 pushes resubscribes with its last position and gets exactly those 50, in order, then
// live ones; a position older than what is kept, and one from before a restart, are told
// `x-recovered: false` in the receipt.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer } from './harness.mjs';
import { authConfig, connect as stompConnect, token } from './stomp-helpers.mjs';

const HISTORY = (size) => `\n[projects.fm.history]\nsize = ${size}\nttl_ms = 300000\ntopics = ["news"]\n`;

function push(s, body) {
  const r = JSON.parse(execFileSync('curl', ['-s', '--unix-socket', s.sock, 'http://x/publish', '-d',
    JSON.stringify({ project: 'fm', destination: '/topic/news', body })], { encoding: 'utf8' }));
  assert.equal(typeof r.sessions, 'number');
}

async function connect(s, cfg) {
  const { client } = await stompConnect(s.url, { token: token(cfg, 'fm', 'ada'), projectId: 'fm' });
  return client;
}

// Subscribes to /topic/news (recovering from `since` if given); resolves the receipt's headers
// and collects every MESSAGE into `got`.
async function subscribe(client, since, got) {
  const receipt = `r-${Math.random()}`;
  const answered = new Promise((resolve) => client.watchForReceipt(receipt, (f) => resolve(f.headers)));
  const headers = { receipt };
  if (since) headers['x-recover-since'] = since;
  client.subscribe('/topic/news', (m) => got.push(m), headers);
  return answered;
}

async function until(cond, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('a client away for 50 pushes recovers exactly those, in order, then live ones', { timeout: 30000 }, async () => {
  const cfg = authConfig(HISTORY(100));
  const s = await startServer(['--config', cfg]);
  try {
    let c = await connect(s, cfg);
    const first = [];
    await subscribe(c, null, first);
    push(s, 'before');
    await until(() => first.length === 1);
    const epoch = first[0].headers['x-epoch'];
    const offset = Number(first[0].headers['x-offset']);
    assert.ok(epoch && offset === 1);
    await c.deactivate();

    for (let i = 0; i < 50; i++) push(s, `missed ${i}`);

    c = await connect(s, cfg);
    const got = [];
    const receipt = await subscribe(c, `${epoch}:${offset}`, got);
    assert.equal(receipt['x-recovered'], 'true');
    assert.equal(receipt['x-offset'], '51');
    await until(() => got.length === 50);
    assert.deepEqual(got.map((m) => m.body), Array.from({ length: 50 }, (_, i) => `missed ${i}`));
    assert.deepEqual(got.map((m) => Number(m.headers['x-offset'])), Array.from({ length: 50 }, (_, i) => i + 2));
    push(s, 'live');
    await until(() => got.length === 51);
    assert.equal(got[50].body, 'live');
    assert.equal(got[50].headers['x-offset'], '52');
    await c.deactivate();
  } finally {
    await s.stop();
  }
});

test('a position older than the history, or from before a restart, is not recovered', { timeout: 30000 }, async () => {
  const cfg = authConfig(HISTORY(10));
  let s = await startServer(['--config', cfg]);
  try {
    let c = await connect(s, cfg);
    const first = [];
    await subscribe(c, null, first);
    push(s, 'x');
    await until(() => first.length === 1);
    const epoch = first[0].headers['x-epoch'];
    await c.deactivate();
    for (let i = 0; i < 30; i++) push(s, `gone ${i}`);
    c = await connect(s, cfg);
    const got = [];
    const receipt = await subscribe(c, `${epoch}:1`, got);
    assert.equal(receipt['x-recovered'], 'false');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(got.length, 0, 'nothing replayed when the client must reload');
    await c.deactivate();

    // A restart: a new epoch, so the old position means nothing.
    await s.stop();
    s = await startServer(['--config', cfg]);
    c = await connect(s, cfg);
    const after = [];
    const r2 = await subscribe(c, `${epoch}:31`, after);
    assert.equal(r2['x-recovered'], 'false');
    assert.notEqual(r2['x-epoch'], epoch);
    await c.deactivate();
  } finally {
    await s.stop();
  }
});
