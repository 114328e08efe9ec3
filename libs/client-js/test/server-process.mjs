// Starts a REAL Tandem server for a test file and stops it afterwards.
//
// TANDEM_BIN must name the server binary (`make test` sets it). The server is started as
//   $TANDEM_BIN --listen 127.0.0.1:0 --data-dir <fresh temp dir> <args>
// and must print a line containing `listening on http://127.0.0.1:PORT/` on stdout once ready.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * @param {string[]} args extra server arguments
 * @returns {Promise<{httpUrl: string, wsUrl: string, dataDir: string, output: () => string, stop: () => void}>}
 */
export async function startServer(args) {
  const bin = process.env.TANDEM_BIN;
  assert.ok(
    bin,
    'TANDEM_BIN is not set: it must name the Tandem server binary (make test sets it), e.g. TANDEM_BIN=target/debug/tandem-standalone',
  );
  assert.equal(typeof globalThis.WebSocket, 'function', 'no global WebSocket: run node with --experimental-websocket (npm test does)');
  const dataDir = mkdtempSync(join(tmpdir(), 'tandem-client-js-'));
  const child = spawn(bin, ['--listen', '127.0.0.1:0', '--data-dir', dataDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  };
  process.on('exit', stop);
  const httpUrl = await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`server did not print "listening on http://..." within 30 s; output:\n${output}`)),
      30000,
    );
    child.stdout.on('data', (chunk) => {
      output += chunk.toString();
      // eslint-disable-next-line no-control-regex
      const m = output.replace(/\x1b\[[0-9;]*m/g, '').match(/listening on (http:\/\/127\.0\.0\.1:\d+)\//);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.stderr.on('data', (chunk) => {
      output += chunk.toString();
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${err.message}`));
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited early (code ${code}, signal ${signal}); output:\n${output}`));
    });
  });
  return { httpUrl, wsUrl: httpUrl.replace(/^http/, 'ws') + '/v1/ws', dataDir, output: () => output, stop };
}
