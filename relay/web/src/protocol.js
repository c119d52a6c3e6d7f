// The wire protocol, as the browser speaks it. Mirrors protocol/ (Python):
// a 16-byte header (version, kind, reserved, epoch u32, seq u64, big-endian)
// then one msgpack map whose fields are written in the catalog's order.
// Both sides are checked against protocol/vectors.json (test/vectors.test.mjs).
import { Encoder, Decoder } from '@msgpack/msgpack';

export const WIRE_VERSION = 1;
export const PROTOCOL_VERSION = 1;
export const HEADER_SIZE = 16;

export const LIMITS = Object.freeze({
  maxFrame: 64 * 1024,
  maxKeyframe: 8 * 1024 * 1024,
  maxString: 32 * 1024,
  maxList: 4096,
  coordMax: 1e7,
});

// Field types: s = str, i = int, n = num (int or float), b = bool,
// y = bin (bytes), S = [str], P = [[num, num]].
// Each field: [name, type, default]; `undefined` default = required.
const R = undefined;
const F = (name, type, dflt = R) => [name, type, dflt];

// [code, name, routing, senders, permission, big, fields]
const TABLE = [
  [0x01, 'HELLO', 'session', 'device viewer visitor', null, false,
    [F('role', 's'), F('version', 'i'), F('token', 's', ''), F('client_id', 's', ''),
      F('resume_epoch', 'i', 0), F('resume_seq', 'i', 0), F('capabilities', 'S', [])]],
  [0x02, 'WELCOME', 'session', 'relay', null, false,
    [F('version', 'i'), F('session', 's'), F('client_id', 's'), F('epoch', 'i'), F('node', 's'),
      F('heartbeat', 'i'), F('resume', 's', ''), F('permissions', 'S', [])]],
  [0x03, 'ERROR', 'session', 'device relay viewer visitor', null, false,
    [F('code', 's'), F('message', 's', ''), F('close_code', 'i', 0), F('node', 's', ''), F('url', 's', '')]],
  [0x04, 'BYE', 'session', 'device relay viewer visitor', null, false,
    [F('code', 'i', 1000), F('reason', 's', '')]],
  [0x10, 'DOM_KEYFRAME', 'ordered', 'visitor', null, true, [F('data', 'y')]],
  [0x11, 'DOM_DELTA', 'ordered', 'visitor', null, false, [F('data', 'y')]],
  [0x12, 'POINTER', 'latest', 'visitor', null, false, [F('x', 'n'), F('y', 'n')]],
  [0x13, 'SCROLL', 'latest', 'visitor', null, false, [F('x', 'n'), F('y', 'n')]],
  [0x14, 'VIEWPORT', 'latest', 'visitor', null, false, [F('width', 'n'), F('height', 'n')]],
  [0x15, 'URL_CHANGE', 'latest', 'visitor', null, false, [F('url', 's'), F('title', 's', '')]],
  [0x16, 'SCREEN_FRAME', 'latest', 'visitor', null, true,
    [F('mime', 's'), F('width', 'n'), F('height', 'n'), F('image', 'y')]],
  [0x17, 'CONSOLE_LINES', 'ordered', 'visitor', null, false, [F('level', 's'), F('lines', 'S')]],
  [0x30, 'CLICK', 'control', 'viewer', 'click', false,
    [F('node', 'i'), F('x', 'n'), F('y', 'n'), F('button', 'i', 0)]],
  [0x31, 'REMOTE_SCROLL', 'control', 'viewer', 'scroll', false, [F('node', 'i'), F('dx', 'n'), F('dy', 'n')]],
  [0x32, 'TYPE', 'control', 'viewer', 'type', false, [F('node', 'i'), F('text', 's', ''), F('key', 's', '')]],
  [0x33, 'DRAW_STROKE', 'control', 'viewer', 'draw', false,
    [F('points', 'P'), F('color', 's', '#e5484d'), F('width', 'n', 3)]],
  [0x34, 'DRAW_CLEAR', 'control', 'viewer', 'draw', false, []],
  [0x35, 'REDIRECT', 'control', 'viewer', 'agent_redirect', false, [F('url', 's')]],
  [0x36, 'RELOAD', 'control', 'viewer', 'agent_redirect', false, []],
  [0x37, 'CONSOLE_EVAL', 'control', 'viewer', 'console', false, [F('code', 's')]],
  [0x38, 'VIEWER_POINTER', 'control', 'viewer', null, false, [F('x', 'n'), F('y', 'n')]],
  [0x50, 'SESSION_REQUEST', 'session', 'relay', null, false,
    [F('session', 's'), F('agent_id', 's'), F('agent_name', 's'), F('permissions', 'S', [])]],
  [0x51, 'SESSION_ACCEPT', 'session', 'relay visitor', null, false, [F('session', 's', '')]],
  [0x52, 'SESSION_DECLINE', 'session', 'relay visitor', null, false, [F('session', 's', ''), F('reason', 's', '')]],
  [0x53, 'SESSION_END', 'session', 'relay viewer visitor', null, false, [F('session', 's', ''), F('reason', 's', '')]],
  [0x54, 'RESYNC_REQUEST', 'session', 'relay viewer', null, false, [F('reason', 's', '')]],
  [0x55, 'PERMISSIONS_UPDATE', 'session', 'relay visitor', null, false, [F('permissions', 'S')]],
  [0x56, 'PRESENCE', 'session', 'visitor', null, false,
    [F('url', 's', ''), F('title', 's', ''), F('unique_id', 's', ''), F('identities', 'S', []),
      F('tags', 'S', []), F('lookup_code', 's', ''), F('browser', 's', ''), F('device_type', 's', ''),
      F('allow', 'S', [])]],
  [0x57, 'PAGEVIEW', 'session', 'visitor', null, false, [F('url', 's'), F('title', 's', ''), F('at', 'i', 0)]],
  [0x60, 'INVENTORY', 'session', 'device', null, false,
    [F('hostname', 's'), F('os', 's'), F('os_version', 's', ''), F('cpu', 's', ''), F('cores', 'i', 0),
      F('memory', 'i', 0), F('disk', 'i', 0), F('macs', 'S', []), F('ips', 'S', []), F('agent_version', 's', '')]],
  [0x61, 'CMD_REBOOT', 'session', 'relay', null, false, [F('id', 's'), F('safe', 'b', false)]],
  [0x62, 'CMD_WAKE', 'session', 'relay', null, false,
    [F('id', 's'), F('mac', 's'), F('broadcast', 's', '255.255.255.255')]],
  [0x63, 'CMD_LOGOUT', 'session', 'relay', null, false, [F('id', 's')]],
  [0x64, 'CMD_RESULT', 'session', 'device', null, false, [F('id', 's'), F('ok', 'b'), F('message', 's', '')]],
  [0x65, 'DEVICE_STATUS', 'session', 'device', null, false, [F('status', 's'), F('detail', 's', '')]],
  [0x70, 'PING', 'session', 'device relay viewer visitor', null, false, [F('t', 'i', 0)]],
  [0x71, 'PONG', 'session', 'device relay viewer visitor', null, false, [F('t', 'i', 0)]],
];

/** KINDS.CLICK === 0x30 */
export const KINDS = {};
/** Indexed by kind code: {code, name, routing, senders, permission, big, fields}. */
export const KIND_INFO = new Array(256).fill(null);
for (const [code, name, routing, senders, permission, big, fields] of TABLE) {
  const info = Object.freeze({ code, name, routing, senders: senders.split(' '), permission, big, fields });
  KINDS[name] = code;
  KIND_INFO[code] = info;
}
Object.freeze(KINDS);

/** Permission names, keyed by the REST API's allow_* flag. */
export const PERMISSION_FLAGS = Object.freeze({
  allow_agent_redirect: 'agent_redirect',
  allow_audio: 'audio',
  allow_click: 'click',
  allow_console: 'console',
  allow_draw: 'draw',
  allow_scroll: 'scroll',
  allow_type: 'type',
});

export const CLOSE = Object.freeze({
  NORMAL: 1000, GOING_AWAY: 1001, ABNORMAL: 1006,
  INTERNAL_ERROR: 4000, SLOW_CONSUMER: 4001, KEEPALIVE_TIMEOUT: 4002, SESSION_MOVED: 4003,
  RATE_LIMITED: 4004, OVERLOADED: 4005, HANDSHAKE_TIMEOUT: 4006, SLOW_MESSAGE: 4007,
  PROTOCOL_ERROR: 4500, FRAME_TOO_BIG: 4501, UNSUPPORTED_VERSION: 4502, UNKNOWN_KIND: 4503,
  TOKEN_INVALID: 4504, TOKEN_EXPIRED: 4505, TOKEN_REUSED: 4506, FORBIDDEN: 4507,
  SESSION_ENDED: 4508, DECLINED: 4509, REPLACED: 4510, NOT_FOUND: 4511,
});

const TERMINAL = new Set([1000, 1002, 1003, 1007, 1008, 1009]);

/** The range is the policy: 4000-4499 retry, 4500-4999 never; unknown codes retry. */
export function shouldReconnect(code) {
  if (code >= 4500 && code <= 4999) return false;
  return !TERMINAL.has(code);
}

export class ProtocolError extends Error {
  constructor(code, detail = '') {
    super(detail ? `${code}: ${detail}` : code);
    this.code = code;
    this.detail = detail;
  }
}

export function kindInfo(kind) {
  const code = typeof kind === 'number' ? kind : KINDS[kind];
  const info = code === undefined ? null : KIND_INFO[code];
  if (!info) throw new ProtocolError('unknown_kind', String(kind));
  return info;
}

export function frameLimit(info) {
  return info.big ? LIMITS.maxKeyframe : LIMITS.maxFrame;
}

// ignoreUndefined: a field is never written as nil by accident.
const encoder = new Encoder({ ignoreUndefined: true });
// The payload decoder refuses what protocol/codec.py refuses, anywhere in the
// map (unknown fields included: the relay forwards visitor frames undecoded, so
// this is the only check a viewer's frames get): ext types (timestamps too),
// non-string keys, invalid UTF-8, nesting past MAX_DEPTH containers, and an
// integral float where an int belongs. @msgpack/msgpack accepts all of these,
// so the hooks below override its (pinned, 3.x) Decoder methods.
const MAX_DEPTH = 1024; // containers, as msgpack-python's unpacker stack
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A float read from the wire whose value is integral: a `num`, never an `int`. */
class WireFloat {
  constructor(value) {
    this.value = value;
  }
}
const wireFloat = (v) => (Number.isInteger(v) ? new WireFloat(v) : v);

class StrictDecoder extends Decoder {
  decodeUtf8String(byteLength, headerOffset) {
    const start = this.pos + headerOffset;
    if (this.bytes.byteLength < start + byteLength) throw new ProtocolError('truncated', 'string');
    if (byteLength > this.maxStrLength) throw new ProtocolError('too_long', `string of ${byteLength} bytes`);
    let text;
    try {
      text = utf8.decode(this.bytes.subarray(start, start + byteLength));
    } catch {
      throw new ProtocolError('malformed', 'invalid UTF-8');
    }
    this.pos = start + byteLength;
    return text;
  }

  pushArrayState(size) {
    if (size > this.maxArrayLength) throw new ProtocolError('too_long', `array of ${size}`);
    if (this.stack.length >= MAX_DEPTH) throw new ProtocolError('too_deep');
    super.pushArrayState(size);
  }

  pushMapState(size) {
    if (size > this.maxMapLength) throw new ProtocolError('too_long', `map of ${size}`);
    if (this.stack.length >= MAX_DEPTH) throw new ProtocolError('too_deep');
    super.pushMapState(size);
  }

  decodeExtension(size) {
    throw new ProtocolError('ext_type', `ext of ${size} bytes`);
  }

  readF32() {
    return wireFloat(super.readF32());
  }

  readF64() {
    return wireFloat(super.readF64());
  }
}

const decoder = new StrictDecoder({
  maxStrLength: LIMITS.maxString * 4,
  maxArrayLength: LIMITS.maxList,
  maxMapLength: 64,
  mapKeyConverter(key) {
    if (typeof key !== 'string') throw new ProtocolError('bad_key', typeof key);
    return key;
  },
});

function payloadError(e) {
  if (e instanceof ProtocolError) return e;
  const text = String(e && e.message);
  if (e instanceof RangeError) return new ProtocolError(text.startsWith('Extra ') ? 'trailing_bytes' : 'truncated', text);
  return new ProtocolError('malformed', text);
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new ProtocolError('wrong_type', 'frame is not bytes');
}

/** Read the header only: {code, kind, routing, epoch, seq, info}. */
export function peek(data) {
  const bytes = toBytes(data);
  if (bytes.length < HEADER_SIZE) throw new ProtocolError('short_header', `${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  if (view.getUint8(0) !== WIRE_VERSION) throw new ProtocolError('bad_version', String(view.getUint8(0)));
  if (view.getUint16(2) !== 0) throw new ProtocolError('reserved_bits');
  const code = view.getUint8(1);
  const info = KIND_INFO[code];
  if (!info) throw new ProtocolError('unknown_kind', `0x${code.toString(16)}`);
  if (bytes.length > frameLimit(info)) throw new ProtocolError('too_big', `${bytes.length} bytes for ${info.name}`);
  const epoch = view.getUint32(4);
  const seq = view.getUint32(8) * 2 ** 32 + view.getUint32(12);
  return { code, kind: info.name, routing: info.routing, epoch, seq, info };
}

function checkNum(v, name) {
  if (v instanceof WireFloat) v = v.value;
  if (typeof v !== 'number') throw new ProtocolError('wrong_type', name);
  if (!Number.isFinite(v)) throw new ProtocolError('not_finite', name);
  if (Math.abs(v) > LIMITS.coordMax) throw new ProtocolError('out_of_range', name);
  return v;
}

function checkStr(v, name) {
  if (typeof v !== 'string') throw new ProtocolError('wrong_type', name);
  if (v.length > LIMITS.maxString) throw new ProtocolError('too_long', name);
  return v;
}

function checkList(v, name) {
  if (!Array.isArray(v)) throw new ProtocolError('wrong_type', name);
  if (v.length > LIMITS.maxList) throw new ProtocolError('too_long', name);
  return v;
}

const CHECKS = {
  s: checkStr,
  i(v, name) {
    if (!Number.isInteger(v)) throw new ProtocolError('wrong_type', name);
    if (!Number.isSafeInteger(v)) throw new ProtocolError('out_of_range', name);
    return v;
  },
  n: checkNum,
  b(v, name) {
    if (typeof v !== 'boolean') throw new ProtocolError('wrong_type', name);
    return v;
  },
  y(v, name) {
    if (!(v instanceof Uint8Array)) throw new ProtocolError('wrong_type', name);
    return v;
  },
  S(v, name) {
    return checkList(v, name).map((s) => checkStr(s, name));
  },
  P(v, name) {
    return checkList(v, name).map((p) => {
      if (!Array.isArray(p)) throw new ProtocolError('wrong_type', name);
      if (p.length !== 2) throw new ProtocolError('bad_value', name);
      return [checkNum(p[0], name), checkNum(p[1], name)];
    });
  },
};

/**
 * Encode one frame. `kind` is a name ("CLICK") or a code (0x30). Every field
 * is written, in catalog order, defaults filled in; integral numbers go out as
 * msgpack ints (the encoder's default, and what protocol/codec.py does).
 */
export function encode(kind, fields = {}, { epoch = 0, seq = 0 } = {}) {
  const info = kindInfo(kind);
  const body = {};
  for (const [name, type, dflt] of info.fields) {
    let v = fields[name];
    if (v === undefined) {
      if (dflt === R) throw new ProtocolError('missing_field', name);
      v = dflt;
    }
    body[name] = CHECKS[type](type === 'y' ? toBytes(v) : v, name);
  }
  const payload = encoder.encode(body);
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, WIRE_VERSION);
  view.setUint8(1, info.code);
  view.setUint32(4, epoch >>> 0);
  view.setUint32(8, Math.floor(seq / 2 ** 32));
  view.setUint32(12, seq % 2 ** 32);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** Decode and check one frame: {kind, code, epoch, seq, fields}. Throws ProtocolError. */
export function decode(data) {
  const bytes = toBytes(data);
  const head = peek(bytes);
  let body;
  try {
    body = decoder.decode(bytes.subarray(HEADER_SIZE));
  } catch (e) {
    throw payloadError(e);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body) || body instanceof Uint8Array) {
    throw new ProtocolError('not_a_map');
  }
  const fields = {};
  for (const [name, type, dflt] of head.info.fields) {
    if (Object.prototype.hasOwnProperty.call(body, name)) fields[name] = CHECKS[type](body[name], name);
    else if (dflt === R) throw new ProtocolError('missing_field', name);
    else fields[name] = Array.isArray(dflt) ? [] : dflt;
  }
  if (head.code === KINDS.HELLO && !['visitor', 'viewer', 'device'].includes(fields.role)) {
    throw new ProtocolError('bad_value', 'role');
  }
  return { kind: head.kind, code: head.code, epoch: head.epoch, seq: head.seq, fields };
}

// rrweb events travel msgpack-encoded inside DOM_KEYFRAME/DOM_DELTA.data.
const eventEncoder = new Encoder({ ignoreUndefined: true });
const eventDecoder = new Decoder();
export function packEvents(events) {
  return eventEncoder.encode(events);
}
export function unpackEvents(data) {
  return eventDecoder.decode(data);
}

/**
 * A websocket `onmessage` handler: decodes each binary frame and passes the
 * message to `onMessage`. Text frames are not part of the protocol and are
 * ignored; an undecodable frame is reported under `tag` and dropped.
 */
export function frameHandler(tag, onMessage) {
  return (ev) => {
    if (typeof ev.data === 'string') return;
    let msg;
    try {
      msg = decode(new Uint8Array(ev.data));
    } catch (e) {
      console.warn(`[${tag}] bad frame`, e);
      return;
    }
    onMessage(msg);
  };
}
