// The 9-digit session code (src/code.js): shown by the SDK, typed into the console.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { formatCode, parseCode, codeLine } from '../src/code.js';

test('a 9-digit code is shown in groups of three', () => {
  assert.equal(formatCode('845800826'), '845 800 826');
  assert.equal(formatCode(845800826), '845 800 826');
  assert.equal(formatCode(' 000000001 '), '000 000 001');
});

test('anything but 9 digits is shown as it is', () => {
  assert.equal(formatCode('12345'), '12345');
  assert.equal(formatCode('84580082A'), '84580082A');
  assert.equal(formatCode('8458008261'), '8458008261');
  assert.equal(formatCode(null), '');
  assert.equal(formatCode(undefined), '');
});

test('the SDK line reads the code in groups', () => {
  assert.equal(codeLine('845800826'), 'Your code: 845 800 826 — read it to your agent');
});

test('what an agent types is read back to the 9 digits', () => {
  for (const typed of ['845800826', '845 800 826', ' 845-800-826 ', '845.800.826', '845  800826']) {
    assert.equal(parseCode(typed), '845800826', typed);
  }
});

test('what is not a 9-digit code is refused', () => {
  for (const typed of ['', '84580082', '8458008261', '845 800 82x', 'abc', '845800826/..', null]) {
    assert.equal(parseCode(typed), '', String(typed));
  }
});
