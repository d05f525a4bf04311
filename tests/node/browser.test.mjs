// Headless Chromium (Debian's `chromium`, driven by puppeteer-core; no browser is downloaded)
// loads the seed's page (examples/spring-demo: sockjs-client + stomp.js 2.3.3) from another
// origin: once as it is, over WebSocket, and once with WebSocket taken away, where SockJS falls
// back to xhr-streaming. Topic and user pushes must reach the page either way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { startServer, launchChromium as launch, CHROMIUM } from './harness.mjs';
import { authConfig, token } from './stomp-helpers.mjs';
import { serveDemo } from '../../examples/spring-demo/serve.mjs';

const LEGACY = '\n[stomp]\nlegacy_destinations = true\n[sockjs]\nendpoints = ["/msg-center/dfocus"]\n';

function adminPublish(s, body) {
  return JSON.parse(execFileSync('curl', ['-s', '--unix-socket', s.sock, 'http://x/publish', '-d', JSON.stringify(body)],
    { encoding: 'utf8' }));
}

// htmlfile: the page is on another origin, so sockjs-client runs it inside ringcast's
// iframe.html, which loads sockjs-client from [sockjs] client_url (here the page's server).
for (const [name, websocket, expected, forced] of [['with WebSocket', true, 'websocket'], ['without WebSocket', false, 'xhr-streaming'],
  ['with htmlfile forced', false, 'iframe-htmlfile', 'iframe-htmlfile'],
  ['with jsonp forced', false, 'jsonp-polling', 'jsonp-polling']]) {
  test(`chromium ${name}: the seed's page connects over ${expected} and gets pushes`, { timeout: 60000 }, async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} missing: scripts/install-test-deps.sh installs Debian's chromium`);
    const page_server = await serveDemo();
    const client = `\nclient_url = "http://127.0.0.1:${page_server.address().port}/sockjs.min.js"\njsonp = true\n`;
    const cfg = authConfig(LEGACY + client);
    const s = await startServer(['--config', cfg, '--shards', '2']);
    const browser = await launch();
    try {
      const page = await browser.newPage();
      if (!websocket) {
        // As behind a proxy that breaks WebSocket: the page never sees one.
        await page.evaluateOnNewDocument(() => { delete window.WebSocket; window.WebSocket = undefined; });
      }
      const q = new URLSearchParams({ server: `http://127.0.0.1:${s.port}`, project: 'fm', token: token(cfg, 'fm', 'dora') });
      if (forced) q.set('transports', forced);
      await page.goto(`http://127.0.0.1:${page_server.address().port}/?${q}`);
      await page.waitForFunction(() => window.demo.connected || window.demo.error, { timeout: 15000 });
      const state = await page.evaluate(() => window.demo);
      assert.equal(state.error, null);
      assert.equal(state.transport, expected);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(adminPublish(s, { project: 'fm', destination: '/topic/news', body: 'to the page' }), { sessions: 1 });
      assert.deepEqual(adminPublish(s, { project: 'fm', user: 'dora', destination: '/queue/fm', body: 'to dora' }), { sessions: 1 });
      await page.waitForFunction(() => window.demo.messages.length === 2, { timeout: 10000 });
      const got = await page.evaluate(() => window.demo.messages);
      assert.deepEqual(got.map((m) => m.body).sort(), ['to dora', 'to the page']);
      assert.deepEqual(got.map((m) => m.destination).sort(), ['/topic/fm/news', '/user/queue/fm']);
    } finally {
      await browser.close();
      page_server.close();
      await s.stop();
    }
  });
}

test('chromium negotiates permessage-deflate and reads a compressed push', { timeout: 60000 }, async () => {
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const cfg = join(mkdtempSync(join(tmpdir(), 'ringcast-chromium-deflate-')), 'ringcast.toml');
  writeFileSync(cfg, '[compression]\nenabled = true\nmin_bytes = 64\n');
  const s = await startServer(['--config', cfg, '--no-auth']);
  const browser = await launch();
  try {
    const page = await browser.newPage();
    // From a page with an http origin: opened from about:blank, the socket failed in this
    // headless Chromium.
    await page.goto(`http://127.0.0.1:${s.port}/ws/info`);
    const opened = page.evaluate((url) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      window.got = [];
      ws.onmessage = (m) => window.got.push(m.data);
      ws.onopen = () => resolve(ws.extensions);
      ws.onerror = () => reject(new Error('websocket error'));
    }), `${s.url}/ws?topic=deflate`);
    const extensions = await opened;
    assert.match(extensions, /permessage-deflate/);
    const body = JSON.stringify({ rows: Array.from({ length: 100 }, (_, i) => ({ i, name: 'row' })) });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(s.push('deflate', body), 1);
    await page.waitForFunction(() => window.got.length === 1, { timeout: 10000 });
    assert.equal(await page.evaluate(() => window.got[0]), body);
  } finally {
    await browser.close();
    await s.stop();
  }
});
