// Helpers for the STOMP tests: configs with keys, tokens from `ringcast token`, stompjs clients.
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { Client } from '@stomp/stompjs';
import { BIN } from './harness.mjs';

export function authConfig(extra = '') {
  const dir = mkdtempSync(join(tmpdir(), 'ringcast-cfg-'));
  const path = join(dir, 'ringcast.toml');
  writeFileSync(path, `[auth]\nenabled = true\nuser_claim = "userName"\n
[projects.fm]\njwt_alg = "HS256"\njwt_secret = "fm-secret"\n
[projects.other]\njwt_alg = "HS256"\njwt_secret = "other-secret"\n${extra}`);
  return path;
}

export function token(config, project, user) {
  return execFileSync(BIN, ['token', '--config', config, '--project', project, '--user', user],
    { encoding: 'utf8' }).trim();
}

export function connect(url, headers, opts = {}) {
  return new Promise((resolve, reject) => {
    const client = new Client({
      webSocketFactory: () => new WebSocket(`${url}/ws`, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
      connectHeaders: headers,
      reconnectDelay: 0,
      heartbeatIncoming: opts.heartbeat ?? 0,
      heartbeatOutgoing: opts.heartbeat ?? 0,
      onConnect: (frame) => resolve({ client, frame }),
      onStompError: (frame) => reject(Object.assign(new Error(frame.headers.message), { frame })),
      onWebSocketError: (e) => reject(e),
    });
    client.activate();
  });
}

export function nextMessage(client, destination, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timeout')), ms);
    const sub = client.subscribe(destination, (m) => { clearTimeout(t); sub.unsubscribe(); resolve(m); });
  });
}

