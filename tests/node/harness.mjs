// Starts the real ringcast binary on a free port with a private admin socket.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.RINGCAST_BIN || join(root, 'target', 'release', 'ringcast');

export function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

export async function startServer(args = []) {
  const dir = mkdtempSync(join(tmpdir(), 'ringcast-node-'));
  const port = await freePort();
  const sock = join(dir, 'admin.sock');
  const proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--admin-socket', sock, ...args],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  for (let i = 0; i < 500 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 20));
  if (!existsSync(sock)) throw new Error('server did not start: ' + log);
  return {
    port, sock, url: `ws://127.0.0.1:${port}`,
    push(topic, body, project) {
      const a = ['push', '--json', '--topic', topic, '--admin-socket', sock];
      if (project) a.push('--project', project);
      a.push(body);
      return JSON.parse(execFileSync(BIN, a, { encoding: 'utf8' })).sessions;
    },
    stats() { return JSON.parse(execFileSync(BIN, ['stats', '--admin-socket', sock], { encoding: 'utf8' })); },
    async stop() {
      if (proc.exitCode !== null) return proc.exitCode;
      const done = new Promise((r) => proc.once('exit', (code) => r(code)));
      proc.kill('SIGTERM');
      return done;
    },
  };
}

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// Debian's Chromium, headless, as root in a container (hence no sandbox); puppeteer-core
// downloads no browser.
export async function launchChromium(extraArgs = []) {
  const { default: puppeteer } = await import('puppeteer-core');
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', ...extraArgs],
  });
}
