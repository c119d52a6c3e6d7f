// Upscope's call style (src/upscope.js): each Upscope(...) call reaches the SDK command it maps to.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { UPSCOPE_EVENTS, isStub, makeGlobal, queuedCalls, upscopeCommands } from '../src/upscope.js';

// A stand-in for the visitor SDK: records calls, fires events like the real one.
function fakeSdk() {
  const calls = [];
  const handlers = {};
  return {
    calls,
    handlers,
    emit(event, ...args) {
      for (const cb of handlers[event] || []) cb(...args);
    },
    init: (o) => calls.push(['init', o]),
    connect: () => calls.push(['connect']),
    updateConnection: (o) => calls.push(['updateConnection', o]),
    getLookupCode: (cb) => cb('0427'),
    getUserId: (cb) => cb('ABCD234567'),
    stopSession: () => {
      calls.push(['stopSession']);
      return Promise.reject(new Error('offline'));
    },
    saveHistory: () => calls.push(['saveHistory']),
    urlChanged: () => calls.push(['urlChanged']),
    reset: () => calls.push(['reset']),
    on: (event, cb) => (handlers[event] = handlers[event] || []).push(cb),
  };
}

function quietly(fn) {
  const warn = console.warn;
  const warned = [];
  console.warn = (...a) => warned.push(a.join(' '));
  try {
    return [fn(), warned];
  } finally {
    console.warn = warn;
  }
}

test("init drops Upscope's apiKey and passes every other option as it is", () => {
  const sdk = fakeSdk();
  const Upscope = makeGlobal('Upscope', upscopeCommands(sdk));
  Upscope('init', { apiKey: 'pk_123', uniqueId: 'u-42', identities: ['Ada', 'ada@example.com'], tags: ['#vip'],
    requireAuthorizationForSession: true, maskedElements: ['#iban'] });
  Upscope('init');
  assert.deepEqual(sdk.calls, [
    ['init', { uniqueId: 'u-42', identities: ['Ada', 'ada@example.com'], tags: ['#vip'],
      requireAuthorizationForSession: true, maskedElements: ['#iban'] }],
    ['init', {}],
  ]);
});

test('updateConnection, saveHistory, newPageview, connect and reset reach the SDK', () => {
  const sdk = fakeSdk();
  const Upscope = makeGlobal('Upscope', upscopeCommands(sdk));
  Upscope('updateConnection', { uniqueId: null, identities: ['Bob'] });
  Upscope('updateConnection');
  Upscope('saveHistory');
  Upscope('newPageview');
  Upscope('connect');
  Upscope('reset');
  assert.deepEqual(sdk.calls, [
    ['updateConnection', { uniqueId: null, identities: ['Bob'] }],
    ['updateConnection', {}],
    ['saveHistory'],
    ['urlChanged'],
    ['connect'],
    ['reset'],
  ]);
});

test('getShortId and getLookupCode answer through the callback', () => {
  const Upscope = makeGlobal('Upscope', upscopeCommands(fakeSdk()));
  const got = [];
  Upscope('getShortId', (id) => got.push(id));
  Upscope('getLookupCode', (code) => got.push(code));
  assert.deepEqual(got, ['ABCD234567', '0427']);
});

test('stopSession returns nothing and a failure is logged, not thrown', async () => {
  const sdk = fakeSdk();
  const Upscope = makeGlobal('Upscope', upscopeCommands(sdk));
  const warn = console.warn;
  const warned = [];
  console.warn = (...a) => warned.push(a.join(' '));
  try {
    assert.equal(Upscope('stopSession'), undefined);
    await new Promise((r) => setTimeout(r, 0));
  } finally {
    console.warn = warn;
  }
  assert.deepEqual(sdk.calls, [['stopSession']]);
  assert.match(warned.join('\n'), /offline/);
});

test("on takes several events and one callback; connection fires once connected, with no argument", () => {
  const sdk = fakeSdk();
  const Upscope = makeGlobal('Upscope', upscopeCommands(sdk));
  const seen = [];
  Upscope('on', 'sessionStart', 'sessionEnd', (...a) => seen.push(['session', ...a]));
  Upscope('on', 'connection', (...a) => seen.push(['connection', ...a]));
  sdk.emit('connection', 'connecting');
  sdk.emit('connection', 'connected');
  sdk.emit('sessionStart', { session: 's1' });
  sdk.emit('sessionEnd', { session: 's1', reason: 'agent' });
  assert.deepEqual(seen, [
    ['connection'],
    ['session', { session: 's1' }],
    ['session', { session: 's1', reason: 'agent' }],
  ]);
  assert.deepEqual(UPSCOPE_EVENTS, ['connection', 'sessionRequest', 'sessionStart', 'sessionContinue', 'sessionEnd']);
  const [, warned] = quietly(() => Upscope('on', 'callStart', () => {}));
  assert.match(warned.join('\n'), /never fired here: callStart/);
});

test('unknown commands warn and return undefined', () => {
  const sdk = fakeSdk();
  const Upscope = makeGlobal('Upscope', upscopeCommands(sdk));
  const [result, warned] = quietly(() => Upscope('requestAgent'));
  assert.equal(result, undefined);
  assert.match(warned.join('\n'), /Upscope: unknown command requestAgent/);
  quietly(() => Upscope('hasOwnProperty'));
  quietly(() => Upscope('__proto__'));
  assert.deepEqual(sdk.calls, []);
  assert.equal(Upscope.loaded, true);
});

test("calls queued by either stub are read back in order; Upscope's own loaded script is left alone", () => {
  // Our documented stub: window.Upscope = window.Upscope || function(){(Upscope.q=Upscope.q||[]).push(arguments)};
  const ours = function stub() {};
  assert.ok(isStub(ours));
  ours.q = [];
  (function push() { ours.q.push(arguments); }('init', { uniqueId: 'x' }));
  (function push() { ours.q.push(arguments); }('saveHistory'));
  assert.deepEqual(queuedCalls(ours), [['init', { uniqueId: 'x' }], ['saveHistory']]);
  // Upscope's snippet: var i=function(){i.c(arguments)}; i.q=[]; i.c=function(args){i.q.push(args)};
  const i = function upscopeStub() { i.c(arguments); };
  i.q = [];
  i.c = (args) => i.q.push(args);
  i('on', 'sessionStart', () => {});
  assert.ok(isStub(i));
  assert.equal(queuedCalls(i)[0][0], 'on');
  assert.ok(isStub(undefined));
  assert.deepEqual(queuedCalls(undefined), []);
  const loaded = function Upscope() {};
  loaded.q = { push() {} }; // anything but a stub's array
  assert.ok(!isStub(loaded));
  assert.ok(!isStub(makeGlobal('Upscope', {})));
  assert.ok(!isStub({}));
});
