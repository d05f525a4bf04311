// `ringcast upgrade` (issue #31) with @stomp/stompjs over Node `ws`: JWT sessions beating every
// second stay connected through three upgrades while a publisher pushes throughout; each gets
// every accepted message once, in order. A client that left before the upgrades comes back
// after them with `x-recover-since` and is told `x-recovered: true`: the history moved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BIN, startServer } from './harness.mjs';
import { authConfig, connect, token } from './stomp-helpers.mjs';

const CONFIG = `
[projects.fm.history]
size = 10000
ttl_ms = 300000
topics = ["news"]

[stomp]
heartbeat_send_ms = 1000
heartbeat_receive_ms = 1000
`;

// One publish over the admin socket: the HTTP status (0 if the socket was not there).
function publish(sock, body) {
  return new Promise((resolve) => {
    const data = JSON.stringify({ project: 'fm', destination: '/topic/news', body });
    const req = request({ socketPath: sock, path: '/publish', method: 'POST', agent: false,
      headers: { 'Content-Length': Buffer.byteLength(data) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
    req.end(data);
  });
}

async function until(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function subscribe(client, got, headers = {}) {
  const receipt = `r-${Math.random()}`;
  const answered = new Promise((resolve) => client.watchForReceipt(receipt, (f) => resolve(f.headers)));
  client.subscribe('/topic/news', (m) => got.push(m), { receipt, ...headers });
  return answered;
}

test('STOMP sessions with beats and history stay through three upgrades', { timeout: 120000 }, async () => {
  const cfg = authConfig(CONFIG);
  const s = await startServer(['--config', cfg, '--shards', '2']);
  const copy = join(mkdtempSync(join(tmpdir(), 'ringcast-next-')), 'ringcast');
  copyFileSync(BIN, copy);
  let last = null;
  try {
    const closes = [];
    const clients = [];
    const got = [];
    for (let i = 0; i < 3; i++) {
      const { client } = await connect(s.url, { token: token(cfg, 'fm', `u${i}`), projectId: 'fm' },
        { heartbeat: 1000 });
      client.onWebSocketClose = (e) => closes.push(e.code);
      got.push([]);
      await subscribe(client, got[i]);
      clients.push(client);
    }
    // One that leaves before the upgrades, remembering where it was.
    const { client: away } = await connect(s.url, { token: token(cfg, 'fm', 'away'), projectId: 'fm' });
    const before = [];
    await subscribe(away, before);
    assert.equal(await publish(s.sock, 'first'), 200);
    await until(() => before.length === 1 && got.every((g) => g.length === 1), 5000, 'the first push');
    const since = `${before[0].headers['x-epoch']}:${before[0].headers['x-offset']}`;
    await away.deactivate();

    let sent = 1;
    let stop = false;
    const publisher = (async () => {
      while (!stop) {
        const status = await publish(s.sock, String(sent));
        if (status === 200) sent += 1;
        else {
          assert.ok(status === 0 || status === 503, `publish answered ${status}`);
          await new Promise((r) => setTimeout(r, 2));
        }
      }
    })();
    for (let round = 0; round < 3; round++) {
      const at = sent;
      await until(() => sent >= at + 200, 30000, 'publishes before the upgrade');
      const { stdout } = await promisify(execFile)(BIN,
        ['upgrade', '--admin-socket', s.sock, '--binary', copy, '--json']);
      const report = JSON.parse(stdout);
      assert.equal(report.connections, 3, stdout);
      assert.equal(report.closed, 0, stdout);
      last = report.pid;
    }
    const at = sent;
    await until(() => sent >= at + 200, 30000, 'publishes after the upgrades');
    stop = true;
    await publisher;
    // Replayed in full: fewer than [limits] send_queue (1,024) went by.
    assert.ok(sent < 1024, `${sent} published`);
    await until(() => got.every((g) => g.length === sent), 30000, 'every message');
    const want = ['first', ...Array.from({ length: sent - 1 }, (_, i) => String(i + 1))];
    for (const g of got) assert.deepEqual(g.map((m) => m.body), want);
    // Beats went on: a second and a half of quiet, and nobody was closed for silence.
    await new Promise((r) => setTimeout(r, 2500));
    assert.deepEqual(closes, []);

    const { client: back } = await connect(s.url, { token: token(cfg, 'fm', 'away'), projectId: 'fm' });
    const recovered = [];
    const receipt = await subscribe(back, recovered, { 'x-recover-since': since });
    assert.equal(receipt['x-recovered'], 'true', JSON.stringify(receipt));
    await until(() => recovered.length === sent - 1, 10000, 'the recovered messages');
    assert.deepEqual(recovered.map((m) => m.body), want.slice(1));
    await back.deactivate();
    for (const c of clients) await c.deactivate();
  } finally {
    if (last) process.kill(last, 'SIGTERM');
    await s.stop();
  }
});
