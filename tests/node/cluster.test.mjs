// @stomp/stompjs across two nodes sharing a real redis-server (started and stopped here on a
// free port): a push on one node reaches stompjs sessions on the other once, with its headers;
// a user's queue follows the user to whatever node holds the session.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { startServer } from './harness.mjs';
import { authConfig, token, connect } from './stomp-helpers.mjs';

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

async function startRedis() {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no'], { stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    try {
      if (execFileSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).trim() === 'PONG') {
        return { url: `redis://127.0.0.1:${port}`, stop: () => proc.kill('SIGKILL') };
      }
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  proc.kill('SIGKILL');
  throw new Error('redis-server did not start');
}

function adminPublish(s, body) {
  return JSON.parse(execFileSync('curl', ['-s', '--unix-socket', s.sock, 'http://x/publish', '-d', JSON.stringify(body)],
    { encoding: 'utf8' }));
}

function subscribed(client, destination, into, receipt) {
  return new Promise((resolve) => {
    client.watchForReceipt(receipt, resolve);
    client.subscribe(destination, (m) => into.push(m), { receipt });
  });
}

test('stompjs sessions on two nodes get each other\'s pushes once, headers intact', async () => {
  const redis = await startRedis();
  const cfg = authConfig();
  const nodes = [];
  try {
    for (let i = 0; i < 2; i++) nodes.push(await startServer(['--config', cfg, '--shards', '2', '--redis', redis.url]));
    const { client: alice } = await connect(nodes[0].url, { token: token(cfg, 'fm', 'alice'), projectId: 'fm' });
    const { client: bob } = await connect(nodes[1].url, { token: token(cfg, 'fm', 'bob'), projectId: 'fm' });
    const aliceNews = []; const aliceQueue = []; const bobNews = []; const bobQueue = [];
    await subscribed(alice, '/topic/news', aliceNews, 'a1');
    await subscribed(alice, '/user/queue/notice', aliceQueue, 'a2');
    await subscribed(bob, '/topic/news', bobNews, 'b1');
    await subscribed(bob, '/user/queue/notice', bobQueue, 'b2');
    // Each node listens in Redis for what its sessions subscribed to.
    for (let i = 0; i < 100; i++) {
      if (nodes.every((n) => n.stats().cluster.channels >= 2)) break;
      await new Promise((r) => setTimeout(r, 50));
    }

    const answer = adminPublish(nodes[1], { project: 'fm', destination: '/topic/news', body: '{"n":1}',
      headers: { 'content-type': 'application/json', 'x-trace': 'abc' } });
    assert.deepEqual(answer, { sessions: 1, cluster: { nodes: 1 } });
    assert.deepEqual(adminPublish(nodes[1], { project: 'fm', user: 'alice', destination: '/queue/notice', body: 'for alice' }),
      { sessions: 0, cluster: { nodes: 1 } });
    for (let i = 0; i < 100 && (aliceNews.length < 1 || bobNews.length < 1 || aliceQueue.length < 1); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 300)); // room for a duplicate to show up
    assert.equal(aliceNews.length, 1);
    assert.equal(bobNews.length, 1);
    assert.equal(aliceNews[0].body, '{"n":1}');
    assert.equal(aliceNews[0].headers['content-type'], 'application/json');
    assert.equal(aliceNews[0].headers['x-trace'], 'abc');
    assert.equal(aliceNews[0].headers.destination, '/topic/news');
    assert.deepEqual(aliceQueue.map((m) => m.body), ['for alice']);
    assert.equal(aliceQueue[0].headers.destination, '/user/queue/notice');
    assert.equal(bobQueue.length, 0);
    await alice.deactivate();
    await bob.deactivate();
  } finally {
    for (const n of nodes) await n.stop();
    redis.stop();
  }
});
