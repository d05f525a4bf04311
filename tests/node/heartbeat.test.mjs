// Heart-beats negotiated at 1 s / 1 s keep a stompjs session alive for 25 s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './harness.mjs';
import { authConfig, token, connect, nextMessage } from './stomp-helpers.mjs';

test('1s/1s heart-beats for 25 s without a drop', { timeout: 60000 }, async () => {
  const cfg = authConfig('\n[stomp]\nheartbeat_send_ms = 1000\nheartbeat_receive_ms = 1000\n');
  const s = await startServer(['--config', cfg, '--shards', '1']);
  try {
    let closed = false;
    const { client, frame } = await connect(s.url, { token: token(cfg, 'fm', 'hb'), projectId: 'fm' }, { heartbeat: 1000 });
    assert.equal(frame.headers['heart-beat'], '1000,1000');
    client.onWebSocketClose = () => { closed = true; };
    await new Promise((r) => setTimeout(r, 25000));
    assert.equal(closed, false);
    const p = nextMessage(client, '/topic/alive');
    await new Promise((r) => setTimeout(r, 200));
    s.push('alive', 'yes', 'fm');
    assert.equal((await p).body, 'yes');
    await client.deactivate();
  } finally {
    await s.stop();
  }
});
