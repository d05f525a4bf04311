// The README's STOMP client snippet runs as it is on this Node (with `ws` imported), against a
// real server: it connects with a token and prints what its user is sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { spawn, execFileSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN, startServer } from './harness.mjs';
import { authConfig, token } from './stomp-helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));

// Run as the README says: against `make run`'s server (auth off, no TOKEN), and with auth on
// and a token.
for (const auth of [false, true]) {
  test(`README's STOMP snippet connects and prints a user push (auth ${auth ? 'on' : 'off'})`, { timeout: 30000 }, async () => {
    const readme = readFileSync(join(here, '..', '..', 'README.md'), 'utf8');
    const snippet = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1])
      .find((s) => s.includes("from '@stomp/stompjs'"));
    assert.ok(snippet, 'README has a runnable @stomp/stompjs snippet');
    const cfg = authConfig('\n[projects.demo]\njwt_secret = "readme-demo-secret-0123456789abcdef"\n');
    const s = await startServer(auth ? ['--config', cfg] : ['--no-auth']);
    const file = join(here, 'readme-snippet.tmp.mjs');
    writeFileSync(file, snippet.replace('ws://127.0.0.1:8080', s.url));
    const env = { ...process.env };
    delete env.TOKEN;
    if (auth) env.TOKEN = token(cfg, 'demo', 'alice');
    const child = spawn(process.execPath, [file], { env });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    try {
      // The snippet subscribes once connected: publish until its session is there.
      let reached = 0;
      for (let i = 0; i < 100 && reached === 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        reached = JSON.parse(execFileSync(BIN,
          ['push', '--json', '--admin-socket', s.sock, '--project', 'demo', '--user', 'alice', '--queue', 'notice', 'hi alice'],
          { encoding: 'utf8' })).sessions;
      }
      assert.equal(reached, 1, out);
      for (let i = 0; i < 50 && !out.includes('hi alice'); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(out, /hi alice/);
      assert.doesNotMatch(out, /needs an authenticated user/);
    } finally {
      child.kill();
      rmSync(file, { force: true });
      await s.stop();
    }
  });
}
