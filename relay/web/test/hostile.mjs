// Feeds frames to protocol.js's decode, each in a worker with its own deadline,
// and prints one JSON result per frame. Driven by tests/web/test_js_hostile.py
// with the hostile table of tests/protocol/test_protocol_hostile.py; not a
// *.test.mjs file, so the vectors run does not pick it up without its input.
//
//   node test/hostile.mjs FRAMES.json [TIMEOUT_MS]
//   FRAMES.json: [{"id": "...", "hex": "..."}]  ->  stdout: [{"id", "outcome", "error", "code", "message", "ms"}]
//   outcome: "threw" | "returned" | "timeout"
import { readFileSync } from 'node:fs';
import { Worker, isMainThread, parentPort } from 'node:worker_threads';

if (isMainThread) {
  const cases = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  const timeoutMs = Number(process.argv[3] || 5000);
  let worker = null;
  const spawn = () => new Worker(new URL(import.meta.url));

  function run(frame) {
    return new Promise((resolve) => {
      const started = performance.now();
      const timer = setTimeout(() => {
        worker.removeAllListeners('message');
        worker.terminate();
        worker = null;
        resolve({ outcome: 'timeout', ms: performance.now() - started });
      }, timeoutMs);
      worker.once('message', (reply) => {
        clearTimeout(timer);
        resolve({ ...reply, ms: performance.now() - started });
      });
      worker.postMessage(frame, [frame.buffer]);
    });
  }

  const results = [];
  for (const c of cases) {
    if (worker === null) worker = spawn();
    const frame = new Uint8Array(Buffer.from(c.hex, 'hex'));
    results.push({ id: c.id, ...(await run(frame)) });
  }
  if (worker !== null) await worker.terminate();
  process.stdout.write(JSON.stringify(results));
} else {
  const { decode, ProtocolError } = await import('../src/protocol.js');
  parentPort.on('message', (frame) => {
    try {
      const msg = decode(frame);
      parentPort.postMessage({ outcome: 'returned', message: JSON.stringify({ kind: msg.kind }) });
    } catch (e) {
      parentPort.postMessage({
        outcome: 'threw',
        error: e instanceof ProtocolError ? 'ProtocolError' : (e && e.constructor && e.constructor.name) || typeof e,
        code: e instanceof ProtocolError ? e.code : null,
        message: String(e && e.message),
      });
    }
  });
}
