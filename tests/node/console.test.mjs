// The web console (issue #19) in headless Chromium (Debian's `chromium`, puppeteer-core): log
// in with an admin key, watch the connection count move as 200 clients arrive, find their
// destination, publish from the page to the page's own "Try it" STOMP client, disconnect a
// user and see its sessions go, log out. Requests without the cookie, or with a forged CSRF
// token, are refused. Screenshots of each page go to target/console-screenshots/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { startServer, freePort, launchChromium, CHROMIUM } from './harness.mjs';
import { token } from './stomp-helpers.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SHOTS = join(root, 'target', 'console-screenshots');
const ADMIN_KEY = 'console-admin-key-0123456789';
const PUBLISH_KEY = 'console-publish-key-0123456789';

function config(apiPort) {
  const dir = mkdtempSync(join(tmpdir(), 'ringcast-console-'));
  const path = join(dir, 'ringcast.toml');
  writeFileSync(path, `[auth]\nenabled = true\nuser_claim = "userName"\n
[projects.fm]\njwt_alg = "HS256"\njwt_secret = "fm-console-secret"\n
[limits]\nmax_pending_per_ip = 0\n
[api]\nlisten = "127.0.0.1:${apiPort}"\nconsole = true\n
[api.keys.ops]\nkey = "${ADMIN_KEY}"\nscopes = ["admin", "publish"]\n
[api.keys.backend]\nkey = "${PUBLISH_KEY}"\nscopes = ["publish"]\n`);
  return path;
}

const until = async (what, fn, ms = 10000) => {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

test('the console in Chromium: live overview, destinations, publish to Try it, disconnect, logout, CSRF', { timeout: 120000 }, async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} missing: scripts/install-test-deps.sh installs Debian's chromium`);
  mkdirSync(SHOTS, { recursive: true });
  const apiPort = await freePort();
  const cfg = config(apiPort);
  const s = await startServer(['--config', cfg, '--shards', '2']);
  const base = `http://127.0.0.1:${apiPort}`;
  const browser = await launchChromium(['--window-size=1280,900']);
  const clients = [];
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    const shot = (name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
    await page.goto(`${base}/console/`);
    await page.waitForSelector('#login:not([hidden])');

    // A key without the admin scope, and a wrong one, are refused.
    for (const bad of [PUBLISH_KEY, 'not-a-key-at-all-0000']) {
      await page.type('#key', bad);
      await page.click('#login-button');
      await page.waitForFunction(() => document.querySelector('#login-error').textContent !== '');
      await page.$eval('#key', (k) => { k.value = ''; });
      await page.$eval('#login-error', (e) => { e.textContent = ''; });
    }
    await shot('login');
    await page.type('#key', ADMIN_KEY);
    await page.click('#login-button');
    await page.waitForSelector('#page-overview:not([hidden])');
    await page.waitForFunction(() => document.querySelector('#ov-connections').textContent === '0', { timeout: 10000 });

    // The cookie: HttpOnly, SameSite=Strict, scoped to the console.
    const [cookie] = (await page.cookies()).filter((c) => c.name === 'ringcast_console');
    assert.ok(cookie, 'a session cookie');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    assert.equal(cookie.path, '/console');
    assert.equal(await page.evaluate(() => document.cookie), '', 'the page cannot read it');

    // 200 raw clients of 20 users on one topic: the count moves within a couple of samples.
    for (let i = 0; i < 200; i++) {
      const tok = token(cfg, 'fm', `load-${i % 20}`);
      const ws = new WebSocket(`${s.url}/ws?topic=news&project=fm&token=${tok}`);
      clients.push(ws);
    }
    await Promise.all(clients.map((ws) => new Promise((ok, fail) => { ws.once('open', ok); ws.once('error', fail); })));
    await page.waitForFunction(() => document.querySelector('#ov-connections').textContent === '200', { timeout: 5000 });
    // Connections are counted as they are accepted, their project once their token is read,
    // so on a loaded machine a sample can land in between: wait for the project's row to catch up.
    await page.waitForFunction(() => /fm\s*200/.test(document.querySelector('#ov-projects').textContent), { timeout: 10000 })
      .catch(async (e) => { throw new Error(`projects never showed fm 200: ${await page.$eval('#ov-projects', (t) => t.textContent)} (${e.message})`); });
    assert.equal(await page.$$eval('#ov-chart polyline', (l) => l.length), s.stats().shard_count, 'one line per shard');
    // A few seconds of samples, so the chart shows a step rather than a line at its edge.
    await new Promise((r) => setTimeout(r, 4000));
    await shot('overview');

    // Destinations: the topic with its 200 subscribers, found by search.
    await page.click('a[data-page=destinations]');
    await page.type('#dest-q', 'new');
    await page.click('#dest-search');
    await page.waitForFunction(() => document.querySelector('#dest-table').textContent.includes('/topic/news'));
    assert.match(await page.$eval('#dest-table', (t) => t.textContent), /\/topic\/news.*200/);
    await shot('destinations');

    // Try it: a STOMP session from the page, then a publish from the Publish page reaches it.
    await page.click('a[data-page=try]');
    await page.waitForSelector('#page-try:not([hidden])');
    await page.click('#try-open');
    await page.waitForFunction(() => document.querySelector('#try-status').textContent.startsWith('connected as'), { timeout: 10000 });
    await page.click('a[data-page=publish]');
    await page.$eval('#pub-project', (e) => { e.value = 'fm'; });
    await page.type('#pub-destination', '/topic/console-test');
    await page.type('#pub-body', 'hello from the console');
    await page.click('#pub-send');
    await page.waitForFunction(() => document.querySelector('#pub-result').textContent.startsWith('reached'));
    assert.equal(await page.$eval('#pub-result', (e) => e.textContent), 'reached 1 session(s)');
    await shot('publish');
    await page.click('a[data-page=try]');
    await page.waitForFunction(() => document.querySelector('#try-log').textContent.includes('hello from the console'));
    await shot('try-it');

    // Sessions of one user, then disconnect it: its 10 sessions close.
    await page.click('a[data-page=sessions]');
    await page.type('#ses-project', 'fm');
    await page.type('#ses-user', 'load-3');
    await page.click('#ses-search');
    await page.waitForFunction(() => document.querySelectorAll('#ses-table tr').length === 10);
    assert.match(await page.$eval('#ses-table', (t) => t.textContent), /127\.0\.0\.1/);
    await shot('sessions');
    const closed = clients.filter((_, i) => i % 20 === 3).map((ws) => new Promise((r) => ws.once('close', r)));
    await page.click('#ses-table button.disconnect');
    await Promise.all(closed);
    await page.waitForFunction(() => document.querySelectorAll('#ses-table tr').length === 0, { timeout: 5000 });
    assert.match(await page.$eval('#ses-result', (e) => e.textContent), /closed 10 session/);

    // Outside the page: no cookie → 401; the cookie with a forged CSRF token → 403; a GET
    // with the cookie works (reads need no token).
    const jar = `ringcast_console=${cookie.value}`;
    const post = (headers) => fetch(`${base}/console/api/publish`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify({ project: 'fm', destination: '/topic/news', body: 'forged' }),
    });
    assert.equal((await post({})).status, 401);
    assert.equal((await post({ Cookie: jar })).status, 403);
    assert.equal((await post({ Cookie: jar, 'X-CSRF-Token': 'forged' })).status, 403);
    assert.equal((await fetch(`${base}/console/api/session`, { headers: { Cookie: jar } })).status, 200);

    // Log out: back to the login form, and the old cookie is dead.
    await page.click('#logout');
    await page.waitForSelector('#login:not([hidden])');
    assert.equal((await fetch(`${base}/console/api/session`, { headers: { Cookie: jar } })).status, 401);
  } finally {
    for (const ws of clients) ws.terminate();
    await browser.close();
    await s.stop();
  }
});

test('the console is off unless [api] console = true', { timeout: 30000 }, async () => {
  const apiPort = await freePort();
  const path = config(apiPort).replace(/ringcast\.toml$/, 'off.toml');
  writeFileSync(path, `[api]\nlisten = "127.0.0.1:${apiPort}"\n[api.keys.ops]\nkey = "${ADMIN_KEY}"\nscopes = ["admin", "publish"]\n`);
  const s = await startServer(['--config', path, '--no-auth']);
  try {
    const r = await fetch(`http://127.0.0.1:${apiPort}/console/`);
    assert.equal(r.status, 401, 'an API route like any other: no key, no answer');
  } finally {
    await s.stop();
  }
});

test('failed console logins are throttled per address', { timeout: 30000 }, async () => {
  const apiPort = await freePort();
  const s = await startServer(['--config', config(apiPort), '--shards', '1']);
  try {
    const login = (key) => fetch(`http://127.0.0.1:${apiPort}/console/login`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ key }),
    });
    for (let i = 0; i < 10; i++) assert.equal((await login(`wrong-key-${i}-0123456789`)).status, 401);
    const r = await login(ADMIN_KEY);
    assert.equal(r.status, 429, 'even the right key waits out the minute');
    assert.match((await r.json()).error, /too many failed logins/);
  } finally {
    await s.stop();
  }
});
