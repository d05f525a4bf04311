// @stomp/stompjs (with Node's `ws`) against the real server: token + projectId auth, topic and
// user-queue subscriptions, admin pushes with the right headers, receipts, projects isolated.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer } from './harness.mjs';
import { authConfig, token, connect } from './stomp-helpers.mjs';

function adminPublish(s, body) {
  return JSON.parse(execFileSync('curl', ['-s', '--unix-socket', s.sock, 'http://x/publish', '-d', JSON.stringify(body)],
    { encoding: 'utf8' }));
}

test('stompjs connects with token + projectId, receives topic and user pushes', async () => {
  const cfg = authConfig();
  const s = await startServer(['--config', cfg, '--shards', '2']);
  try {
    const { client: alice, frame } = await connect(s.url, { token: token(cfg, 'fm', 'alice'), projectId: 'fm' });
    assert.equal(frame.headers.version, '1.2');
    assert.equal(frame.headers['user-name'], 'alice');
    const { client: other } = await connect(s.url, { token: token(cfg, 'other', 'alice'), projectId: 'other' });

    const got = [];
    alice.subscribe('/topic/news', (m) => got.push(m));
    const userMsgs = [];
    const leaked = [];
    other.subscribe('/topic/news', (m) => leaked.push(m));
    other.subscribe('/user/queue/notice', (m) => leaked.push(m));
    // The RECEIPT for the last SUBSCRIBE proves every frame before it was processed.
    await new Promise((resolve) => {
      alice.watchForReceipt('r-1', resolve);
      alice.subscribe('/user/queue/notice', (m) => userMsgs.push(m), { receipt: 'r-1' });
    });
    await new Promise((r) => setTimeout(r, 100));

    assert.deepEqual(adminPublish(s, { project: 'fm', destination: '/topic/news', body: '{"n":1}',
      headers: { 'content-type': 'application/json', 'x-trace': 'abc' } }), { sessions: 1 });
    assert.deepEqual(adminPublish(s, { project: 'fm', user: 'alice', destination: '/queue/notice', body: 'for alice' }),
      { sessions: 1 });
    for (let i = 0; i < 50 && (got.length < 1 || userMsgs.length < 1); i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(got.length, 1);
    const m = got[0];
    assert.equal(m.body, '{"n":1}');
    assert.equal(m.headers.destination, '/topic/news');
    assert.equal(m.headers['content-type'], 'application/json');
    assert.equal(m.headers['x-trace'], 'abc');
    assert.ok(m.headers['message-id']);
    assert.equal(m.headers.subscription, 'sub-0');
    assert.equal(userMsgs.length, 1);
    assert.equal(userMsgs[0].body, 'for alice');
    assert.equal(userMsgs[0].headers.destination, '/user/queue/notice');
    assert.equal(leaked.length, 0, 'another project must never see these');

    const sessions = JSON.parse(execFileSync('curl', ['-s', '--unix-socket', s.sock, 'http://x/sessions?project=fm'], { encoding: 'utf8' }));
    assert.equal(sessions.total, 1);
    assert.equal(sessions.sessions[0].user, 'alice');
    assert.deepEqual(sessions.sessions[0].subscriptions.map((x) => x.destination).sort(), ['/topic/news', '/user/queue/notice']);

    const closed = new Promise((r) => alice.onWebSocketClose = (e) => r(e.code));
    const d = JSON.parse(execFileSync('curl', ['-s', '--unix-socket', s.sock, 'http://x/disconnect', '-d', '{"project":"fm","user":"alice"}'], { encoding: 'utf8' }));
    assert.deepEqual(d, { sessions: 1 });
    assert.equal(await closed, 1008);
    await other.deactivate();
  } finally {
    await s.stop();
  }
});

test('bad tokens get ERROR auth_fail', async () => {
  const cfg = authConfig();
  const s = await startServer(['--config', cfg, '--shards', '1']);
  try {
    const cases = [
      { projectId: 'fm' },
      { projectId: 'fm', token: 'not.a.jwt' },
      { projectId: 'fm', token: token(cfg, 'other', 'mallory') },
      { projectId: 'nope', token: token(cfg, 'fm', 'alice') },
    ];
    for (const headers of cases) {
      await assert.rejects(connect(s.url, headers), (e) => e.message === 'auth_fail');
    }
  } finally {
    await s.stop();
  }
});
