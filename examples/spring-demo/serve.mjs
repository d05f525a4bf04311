// Serves the demo page and the two scripts it loads (from the test clients' node_modules:
// sockjs-client 1.6 and stompjs 2.3.3, installed by `npm ci --prefix tests/node`).
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, '..', '..', 'tests', 'node', 'node_modules');
const files = {
  '/': [join(here, 'index.html'), 'text/html; charset=utf-8'],
  '/sockjs.min.js': [join(modules, 'sockjs-client', 'dist', 'sockjs.min.js'), 'text/javascript'],
  '/stomp.min.js': [join(modules, 'stompjs', 'lib', 'stomp.min.js'), 'text/javascript'],
};

export function serveDemo(port = 0, host = '127.0.0.1') {
  const server = createServer((req, res) => {
    const file = files[new URL(req.url, 'http://x').pathname];
    if (!file) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    res.writeHead(200, { 'content-type': file[1] });
    res.end(readFileSync(file[0]));
  });
  return new Promise((resolve) => server.listen(port, host, () => resolve(server)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] || 8090);
  await serveDemo(port);
  console.log(`demo page on http://127.0.0.1:${port}/`);
}
