// Upscope's JavaScript call style, answered by this SDK: a page written for Upscope's script
// (`Upscope('init', {...})`, `Upscope('updateConnection', {...})`, ...) works by pointing its
// script tag at {BASE}/sdk.js. No DOM here: sdk.js builds the globals, test/upscope.test.mjs
// checks the mapping against a stand-in SDK.

// Upscope's events that fire here; the others (calls, agent requests, observers) never do.
export const UPSCOPE_EVENTS = ['connection', 'sessionRequest', 'sessionStart', 'sessionContinue', 'sessionEnd'];

function warn(...args) {
  console.warn('[cobrowse]', ...args);
}

// Upscope's commands, as `sdk` (the visitor SDK) answers them. Unknown ones warn and do nothing.
export function upscopeCommands(sdk) {
  return {
    // apiKey names an Upscope account: meaningless here (the relay is the script tag's origin).
    // The other options have the same names here (uniqueId, identities, tags, maskedElements,
    // requireAuthorizationForSession, authorizationPromptMessage, allowRemote*, autoconnect).
    init: (options) => {
      const rest = { ...(options || {}) };
      delete rest.apiKey;
      return sdk.init(rest);
    },
    connect: () => sdk.connect(),
    updateConnection: (options) => sdk.updateConnection(options || {}),
    getLookupCode: (cb) => sdk.getLookupCode(cb),
    getShortId: (cb) => sdk.getUserId(cb),
    // Upscope's stopSession returns nothing: a failure is logged, not thrown.
    stopSession: () => {
      Promise.resolve(sdk.stopSession()).catch((e) => warn(e && e.message ? e.message : e));
    },
    saveHistory: () => sdk.saveHistory(),
    newPageview: () => sdk.urlChanged(), // an SPA changed page: presence carries the new URL
    reset: () => sdk.reset(),
    // on(...events, cb). Upscope's `connection` fires once connected, with no argument.
    on: (...args) => {
      const cb = args.pop();
      if (typeof cb !== 'function') return;
      for (const event of args) {
        if (!UPSCOPE_EVENTS.includes(event)) warn('Upscope event never fired here:', event);
        if (event === 'connection') sdk.on(event, (state) => { if (state === 'connected') cb(); });
        else sdk.on(event, cb);
      }
    },
  };
}

// A global `name(cmd, ...args)` answering `commands`.
export function makeGlobal(name, commands) {
  function call(cmd, ...args) {
    const fn = Object.prototype.hasOwnProperty.call(commands, cmd) ? commands[cmd] : null;
    if (!fn) {
      warn(`${name}: unknown command`, cmd);
      return undefined;
    }
    return fn(...args);
  }
  call.loaded = true;
  call.version = '0.1.0';
  return call;
}

// The calls a page's stub queued before the script loaded (each an arguments object or array).
export function queuedCalls(stub) {
  const q = stub && Array.isArray(stub.q) ? stub.q : [];
  return Array.from(q, (a) => Array.from(a));
}

// Nothing there yet, or a queueing stub (ours: `q` made on the first call; Upscope's: `q` and `c`).
// Anything else (Upscope's own script already loaded) is left alone.
export function isStub(v) {
  return v === undefined || (typeof v === 'function' && !v.loaded && (v.q === undefined || Array.isArray(v.q)));
}
