// wss:// with real clients (issue #16): @stomp/stompjs over Node `ws` with perMessageDeflate on,
// trusting the test CA; headless Chromium told to trust the test certificate, running
// @stomp/stompjs in the page, with WebSocket.extensions showing permessage-deflate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, execSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { Client } from '@stomp/stompjs';
import { startServer, launchChromium } from './harness.mjs';
import { authConfig, token } from './stomp-helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const TLS = join(here, '..', 'tls');
const CA = readFileSync(join(TLS, 'ca.pem'));
const COMPRESSION = '\n[compression]\nenabled = true\nmin_bytes = 64\n';
const tlsArgs = ['--tls-cert', join(TLS, 'server.pem'), '--tls-key', join(TLS, 'server.key')];

function adminPublish(s, body) {
  return JSON.parse(execFileSync('curl', ['-s', '--unix-socket', s.sock, 'http://x/publish', '-d', JSON.stringify(body)],
    { encoding: 'utf8' }));
}

test('@stomp/stompjs over wss with permessage-deflate gets a compressed push', { timeout: 30000 }, async () => {
  const cfg = authConfig(COMPRESSION);
  const s = await startServer(['--config', cfg, ...tlsArgs]);
  let socket;
  try {
    const client = new Client({
      webSocketFactory: () => {
        socket = new WebSocket(`wss://127.0.0.1:${s.port}/ws`, ['v12.stomp'], { ca: CA, perMessageDeflate: true });
        return socket;
      },
      connectHeaders: { token: token(cfg, 'fm', 'ada'), projectId: 'fm' },
      reconnectDelay: 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
    });
    await new Promise((resolve, reject) => {
      client.onConnect = resolve;
      client.onStompError = (f) => reject(new Error(f.headers.message));
      client.onWebSocketError = reject;
      client.activate();
    });
    assert.match(socket.extensions, /permessage-deflate/);
    const body = JSON.stringify({ rows: Array.from({ length: 200 }, (_, i) => ({ i, v: 'value' })) });
    const got = new Promise((resolve) => client.subscribe('/topic/news', (m) => resolve(m.body)));
    await new Promise((r) => setTimeout(r, 200));
    const before = s.stats().bytes_out;
    assert.deepEqual(adminPublish(s, { project: 'fm', destination: '/topic/news', body }), { sessions: 1 });
    assert.equal(await got, body);
    assert.ok(s.stats().bytes_out - before < body.length / 3, 'the push went compressed');
    await client.deactivate();
  } finally {
    await s.stop();
  }
});

function spki(pem) {
  return execSync(`openssl x509 -in ${pem} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`,
    { encoding: 'utf8' }).trim();
}

test('chromium over wss: @stomp/stompjs in the page, deflate negotiated, pushes arrive', { timeout: 60000 }, async () => {
  const cfg = authConfig(COMPRESSION);
  const s = await startServer(['--config', cfg, ...tlsArgs]);
  // The browser trusts exactly the test certificate's key (no system CA store is touched).
  const browser = await launchChromium([`--ignore-certificate-errors-spki-list=${spki(join(TLS, 'server.pem'))}`]);
  try {
    const page = await browser.newPage();
    // An https page of the same origin (SockJS's /info answers GET), then stompjs into it.
    const res = await page.goto(`https://127.0.0.1:${s.port}/ws/info`);
    assert.equal(res.status(), 200);
    await page.addScriptTag({ path: join(here, 'node_modules/@stomp/stompjs/bundles/stomp.umd.min.js') });
    const tok = token(cfg, 'fm', 'grace');
    await page.evaluate((url, tok) => new Promise((resolve, reject) => {
      window.got = [];
      const client = new StompJs.Client({
        brokerURL: url,
        connectHeaders: { token: tok, projectId: 'fm' },
        reconnectDelay: 0,
        heartbeatIncoming: 0,
        heartbeatOutgoing: 0,
        onConnect: () => {
          window.extensions = client.webSocket.extensions;
          client.subscribe('/topic/news', (m) => window.got.push(m.body));
          client.subscribe('/user/queue/fm', (m) => window.got.push(m.body));
          resolve();
        },
        onStompError: (f) => reject(new Error(f.headers.message)),
        onWebSocketError: () => reject(new Error('websocket error')),
      });
      client.activate();
    }), `wss://127.0.0.1:${s.port}/ws`, tok);
    assert.match(await page.evaluate(() => window.extensions), /permessage-deflate/);
    await new Promise((r) => setTimeout(r, 300));
    const big = 'x'.repeat(2000);
    assert.deepEqual(adminPublish(s, { project: 'fm', destination: '/topic/news', body: big }), { sessions: 1 });
    assert.deepEqual(adminPublish(s, { project: 'fm', user: 'grace', destination: '/queue/fm', body: 'to grace' }), { sessions: 1 });
    await page.waitForFunction(() => window.got.length === 2, { timeout: 10000 });
    assert.deepEqual((await page.evaluate(() => window.got)).sort(), ['to grace', big].sort());
    assert.ok(s.stats().tls_handshakes >= 2);
  } finally {
    await browser.close();
    await s.stop();
  }
});
