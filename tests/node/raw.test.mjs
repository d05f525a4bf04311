// Node `ws` clients in raw mode against the real server, on both io_uring paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer } from './harness.mjs';

function open(url, opts) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, opts);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
}

function next(ws, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timeout')), ms);
    ws.once('message', (data, isBinary) => { clearTimeout(t); resolve(isBinary ? data : data.toString()); });
  });
}

for (const mode of ['multishot', 'compat']) {
  test(`ws clients receive pushes across shards (${mode})`, async () => {
    const s = await startServer(['--shards', '4', ...(mode === 'compat' ? ['--io-compat'] : [])]);
    try {
      const subs = await Promise.all(Array.from({ length: 24 }, () => open(`${s.url}/ws?topic=alerts&project=acme`)));
      const bystander = await open(`${s.url}/ws?topic=alerts`);
      assert.equal(s.push('alerts', 'fire', 'acme'), 24);
      const got = await Promise.all(subs.map((w) => next(w)));
      assert.ok(got.every((m) => m === 'fire'));
      await assert.rejects(next(bystander, 200), /timeout/);
      subs.forEach((w) => w.close());
      bystander.close();
    } finally {
      assert.equal(await s.stop(), 0);
    }
  });
}

test('refused upgrades carry a status and reason', async () => {
  const s = await startServer(['--shards', '2']);
  try {
    await assert.rejects(open(`${s.url}/elsewhere`), /HTTP 404/);
    await assert.rejects(open(`${s.url}/ws`, { protocolVersion: 8 }), /HTTP 426|Unsupported protocol version/);
  } finally {
    await s.stop();
  }
});

test('too-big message closes with 1009 and others keep working', async () => {
  const s = await startServer(['--shards', '2']);
  try {
    const other = await open(`${s.url}/ws?topic=t`);
    const big = await open(`${s.url}/ws?topic=t`);
    const closed = new Promise((r) => big.once('close', (code) => r(code)));
    big.send(Buffer.alloc(70 * 1024));
    assert.equal(await closed, 1009);
    assert.equal(s.push('t', 'ok'), 1);
    assert.equal(await next(other), 'ok');
    other.close();
  } finally {
    await s.stop();
  }
});

test('Node ws with perMessageDeflate negotiates compression and gets pushes intact', async () => {
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'ringcast-deflate-'));
  const cfg = join(dir, 'ringcast.toml');
  writeFileSync(cfg, '[compression]\nenabled = true\nmin_bytes = 64\n');
  const s = await startServer(['--config', cfg, '--no-auth']);
  try {
    const ws = new WebSocket(`${s.url}/ws?topic=z`, { perMessageDeflate: true });
    await new Promise((r, j) => { ws.on('open', r); ws.on('error', j); });
    assert.match(ws.extensions, /permessage-deflate/);
    const body = JSON.stringify({ rows: Array.from({ length: 200 }, (_, i) => ({ i, v: 'value' })) });
    const got = new Promise((r) => ws.once('message', (m) => r(m.toString())));
    assert.equal(s.push('z', body), 1);
    assert.equal(await got, body);
    ws.close();
  } finally {
    await s.stop();
  }
});
