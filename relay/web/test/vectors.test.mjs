// The browser codec against the shared byte vectors written by protocol/ (Python):
// every vector decodes to its message, and every message encodes to its exact bytes.
// VECTORS=path overrides the file (used while developing against a scratch set).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import {
  KINDS, KIND_INFO, WIRE_VERSION, PROTOCOL_VERSION, encode, decode, peek, shouldReconnect, ProtocolError,
} from '../src/protocol.js';

const path = process.env.VECTORS || fileURLToPath(new URL('../../../protocol/vectors.json', import.meta.url));
const doc = JSON.parse(readFileSync(path, 'utf8'));

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'));

// JSON form of a message -> the values the JS codec uses ({"$bin": hex} -> Uint8Array).
function fromJson(v) {
  if (Array.isArray(v)) return v.map(fromJson);
  if (v && typeof v === 'object') {
    if ('$bin' in v) return unhex(v.$bin);
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fromJson(x)]));
  }
  return Object.is(v, -0) ? 0 : v; // the wire has no -0: it travels as the integer 0
}

test('the vectors file has the wire and protocol versions of this codec', () => {
  assert.equal(doc.wire_version, WIRE_VERSION);
  assert.equal(doc.protocol_version, PROTOCOL_VERSION);
  assert.ok(doc.vectors.length > 0);
});

test('every kind in the vectors has the same code here', () => {
  for (const v of doc.vectors) assert.equal(KINDS[v.kind], v.code, v.name);
});

test('every kind of this codec has at least one vector', () => {
  const seen = new Set(doc.vectors.map((v) => v.kind));
  for (const name of Object.keys(KINDS)) assert.ok(seen.has(name), `no vector for ${name}`);
});

test('fields are declared in the same order as the vectors list them', () => {
  for (const v of doc.vectors) {
    const names = KIND_INFO[v.code].fields.map((f) => f[0]);
    assert.deepEqual(names, Object.keys(v.message), v.name);
  }
});

test('every vector decodes to its message, epoch and seq', () => {
  for (const v of doc.vectors) {
    const got = decode(unhex(v.hex));
    assert.equal(got.kind, v.kind, v.name);
    assert.equal(got.epoch, v.epoch, v.name);
    assert.equal(got.seq, v.seq, v.name);
    assert.deepEqual(got.fields, fromJson(v.message), v.name);
  }
});

test('every message encodes to the exact bytes of its vector', () => {
  for (const v of doc.vectors) {
    const bytes = encode(v.kind, fromJson(v.message), { epoch: v.epoch, seq: v.seq });
    assert.equal(hex(bytes), v.hex, v.name);
    assert.equal(hex(encode(v.code, fromJson(v.message), { epoch: v.epoch, seq: v.seq })), v.hex, v.name);
  }
});

test('peek reads kind, epoch and seq from the header alone', () => {
  for (const v of doc.vectors) {
    const h = peek(unhex(v.hex));
    assert.equal(h.kind, v.kind);
    assert.equal(h.code, v.code);
    assert.equal(h.epoch, v.epoch);
    assert.equal(h.seq, v.seq);
  }
});

test('the worked example in docs/protocol.md encodes to its bytes', () => {
  const bytes = encode('CLICK', { node: 12, x: 100.5, y: 20 }, { epoch: 7, seq: 1 });
  assert.equal(
    hex(bytes),
    '0130000000000007000000000000000184a46e6f64650ca178cb4059200000000000a17914a6627574746f6e00',
  );
});

test('omitted fields with defaults are written with their defaults', () => {
  const got = decode(encode('DRAW_STROKE', { points: [[1, 2]] })).fields;
  assert.deepEqual(got, { points: [[1, 2]], color: '#e5484d', width: 3 });
});

test('a missing required field is refused on encode and on decode', () => {
  assert.throws(() => encode('CLICK', { node: 1, x: 1 }), (e) => e instanceof ProtocolError && e.code === 'missing_field');
  // PONG's map {t} read as a REDIRECT lacks REDIRECT.url
  const frame = encode('PONG', {}).map((b, i) => (i === 1 ? KINDS.REDIRECT : b));
  assert.throws(() => decode(frame), (e) => e.code === 'missing_field');
});

test('bad headers are refused with the protocol error codes', () => {
  const ok = encode('PING', { t: 1 });
  const bad = (i, b) => ok.map((x, j) => (j === i ? b : x));
  assert.throws(() => decode(ok.subarray(0, 10)), (e) => e.code === 'short_header');
  assert.throws(() => decode(bad(0, 2)), (e) => e.code === 'bad_version');
  assert.throws(() => decode(bad(1, 0xee)), (e) => e.code === 'unknown_kind');
  assert.throws(() => decode(bad(3, 1)), (e) => e.code === 'reserved_bits');
});

test('non-finite and out-of-range numbers are refused', () => {
  assert.throws(() => encode('POINTER', { x: NaN, y: 0 }), (e) => e.code === 'not_finite');
  assert.throws(() => encode('POINTER', { x: 1e8, y: 0 }), (e) => e.code === 'out_of_range');
});

test('close codes 4000-4499 reconnect and 4500-4999 do not', () => {
  for (const c of [1001, 1006, 4000, 4001, 4003, 4499]) assert.equal(shouldReconnect(c), true, String(c));
  for (const c of [1000, 4500, 4504, 4508, 4509, 4510, 4999]) assert.equal(shouldReconnect(c), false, String(c));
});

test('an ERROR carrying a session_moved hint has a vector, and decodes to its node and url', () => {
  const v = doc.vectors.find((x) => x.name === 'error-session-moved-hint');
  assert.ok(v, 'no error-session-moved-hint vector');
  const got = decode(unhex(v.hex)).fields;
  assert.equal(got.code, 'session_moved');
  assert.equal(got.close_code, 4003);
  assert.equal(got.node, 'node2');
  assert.equal(got.url, 'https://relay-2.example.com/cobrowsing');
});

test('an ERROR from an older relay (no node, no url) decodes with both empty', () => {
  // {code, message, close_code} only, as written before node/url were added
  const old = encode('PONG', {}).subarray(0, 16).map((b, i) => (i === 1 ? KINDS.ERROR : b));
  const payload = unhex('83a4636f6465ad73657373696f6e5f6d6f766564a76d657373616765a0aa636c6f73655f636f6465cd0fa3');
  const frame = new Uint8Array(old.length + payload.length);
  frame.set(old);
  frame.set(payload, old.length);
  assert.deepEqual(decode(frame).fields, { code: 'session_moved', message: '', close_code: 4003, node: '', url: '' });
});
