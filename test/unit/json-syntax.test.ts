// findJsonSyntaxError: agrees with JSON.parse on what is valid, and places each error without quoting it.
import { describe, expect, it } from 'vitest';
import { findJsonSyntaxError } from '../../src/json-syntax.js';

describe('findJsonSyntaxError', () => {
  it.each([
    '{}',
    '[]',
    '0',
    '"x"',
    ' {"a": [1, -2.5e+3, true, false, null, {"b": "\\u00e9\\n\\"\\\\"}], "c": {}}\n',
  ])('finds nothing wrong in valid JSON %j', (text) => {
    expect(() => JSON.parse(text) as unknown).not.toThrow();
    expect(findJsonSyntaxError(text)).toBeUndefined();
  });

  it.each([
    { text: '', line: 1, column: 1, reason: 'the text ends early' },
    { text: '{"etcd": ', line: 1, column: 10, reason: 'the text ends early' },
    { text: '{"a": "open', line: 1, column: 12, reason: 'the text ends early' },
    { text: '{"a": 1,}', line: 1, column: 9, reason: 'expected a property name in double quotes' },
    { text: "{'a': 1}", line: 1, column: 2, reason: 'expected a property name in double quotes' },
    { text: '{"a" 1}', line: 1, column: 6, reason: 'expected ":" after the property name' },
    { text: '{"a": 1 "b": 2}', line: 1, column: 9, reason: 'expected "," or "}"' },
    { text: '[1 2]', line: 1, column: 4, reason: 'expected "," or "]"' },
    { text: '{\n  "k": \'secret\'\n}', line: 2, column: 8, reason: /single/ },
    { text: '{"a": tru}', line: 1, column: 7, reason: /^expected a value/ },
    { text: '{"a": "x\ny"}', line: 1, column: 9, reason: /control character/ },
    { text: '{"a": "\\q"}', line: 1, column: 9, reason: 'an invalid escape in a string' },
    { text: '{"a": "\\u12"}', line: 1, column: 9, reason: 'a \\u escape needs four hex digits' },
    { text: '{"a": -}', line: 1, column: 7, reason: 'an invalid number' },
    { text: '{} x', line: 1, column: 4, reason: 'more text after the JSON value' },
    { text: '\uFEFF{}', line: 1, column: 1, reason: /byte order mark/ },
  ])('places the error in $text', ({ text, line, column, reason }) => {
    expect(() => JSON.parse(text) as unknown).toThrow(SyntaxError);
    const found = findJsonSyntaxError(text);
    expect(found).toMatchObject({ line, column });
    expect(found?.reason).toMatch(reason);
  });
});
