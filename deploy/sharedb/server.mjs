// ShareDB 7 in memory: the baseline that services/loadgen/sharedb-bench.sh measures next to Tandem.
// The default MemoryDB (no durability, no database process) and no pub/sub beyond the built-in one:
// the cheapest ShareDB there is, so a ratio against it is a ratio against ShareDB's own work.
//
//   node server.mjs PORT      (127.0.0.1; 0 picks a free port)
//
// Prints "sharedb listening on ws://127.0.0.1:PORT" once it accepts connections, and exits on
// SIGTERM or SIGINT after closing the server.
import http from 'node:http';
import ShareDB from 'sharedb';
import otText from 'ot-text-unicode';
import { WebSocketServer } from 'ws';
import WebSocketJSONStream from '@teamwork/websocket-json-stream';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node server.mjs PORT');
  process.exit(64);
}

// The load generator names its documents with `{"create":{"type":"http://sharejs.org/types/text-unicode"}}`.
ShareDB.types.register(otText.type);
const backend = new ShareDB();
const server = http.createServer();
const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => backend.listen(new WebSocketJSONStream(ws)));

server.listen(port, '127.0.0.1', () => {
  console.log(`sharedb listening on ws://127.0.0.1:${server.address().port}`);
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  server.closeAllConnections();
  server.close(() => backend.close(() => process.exit(0)));
  // Whatever still holds the loop open must not keep a benchmark waiting.
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
