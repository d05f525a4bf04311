// Comparison peer for `ringcast-bench compare`: the push server a Node user would write with
// `ws`, the most used Node WebSocket server, set up as its README advises for many clients:
// permessage-deflate off (its docs warn about its memory cost), no client tracking we do not
// use, one shared Buffer per broadcast.
//
// GET /ws?topic=T subscribes at upgrade (like ringcast's raw mode); POST /publish?topic=T on the
// publish port sends the body to every open subscriber and answers {"sessions":N}.
//
// Usage: node server.mjs WS_PORT PUBLISH_PORT [CERT.pem KEY.pem]   (with both: wss:// via https)
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { WebSocketServer, WebSocket } from 'ws';

const [wsPort, publishPort] = process.argv.slice(2, 4).map(Number);
const [certFile, keyFile] = process.argv.slice(4, 6);
if (!wsPort || !publishPort) {
  console.error('usage: node server.mjs WS_PORT PUBLISH_PORT');
  process.exit(2);
}

const topics = new Map();
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });

const notFound = (req, res) => {
  res.writeHead(404).end();
};
const server = certFile
  ? https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, notFound)
  : http.createServer(notFound);
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://peer');
  if (url.pathname !== '/ws') {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const topic = url.searchParams.get('topic') ?? '';
    let members = topics.get(topic);
    if (!members) topics.set(topic, (members = new Set()));
    members.add(ws);
    ws.on('close', () => members.delete(ws));
    ws.on('error', () => {});
  });
});
server.listen({ port: wsPort, host: '127.0.0.1', backlog: 65535 });

const publisher = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://peer');
  if (req.method !== 'POST' || url.pathname !== '/publish') {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    let sessions = 0;
    for (const ws of topics.get(url.searchParams.get('topic') ?? '') ?? []) {
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(body, { binary: false });
        sessions++;
      }
    }
    res.writeHead(200, { 'content-type': 'application/json', connection: 'close' });
    res.end(JSON.stringify({ sessions }));
  });
});
publisher.listen({ port: publishPort, host: '127.0.0.1' }, () =>
  console.error(`peer-node-ws: ws on ${wsPort}, publish on ${publishPort}`));
