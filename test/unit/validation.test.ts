// validate(): every problem with its path, unknown keys grouped per object, and no value quoted.
import * as v from 'valibot';
import { describe, expect, it } from 'vitest';
import { strictObject, validate } from '../../src/validation.js';

const schema = strictObject({
  name: v.pipe(v.string(), v.minLength(1)),
  port: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535)), 22),
  level: v.optional(v.picklist(['info', 'debug'])),
  inner: v.optional(
    strictObject({ on: v.optional(v.boolean(), true), tags: v.optional(v.array(v.string())) }),
    {},
  ),
});

describe('validate', () => {
  it('applies defaults, nested ones included', () => {
    expect(validate(schema, { name: 'x' })).toEqual({
      ok: true,
      value: { name: 'x', port: 22, inner: { on: true } },
    });
  });

  it('names every unknown key of an object at once, one problem per object', () => {
    const result = validate(schema, {
      name: 'x',
      extra: 1,
      other: 2,
      inner: { secretkey: 'hunter2hunter2', x: 3 },
    });
    expect(result).toEqual({
      ok: false,
      problems: [
        { kind: 'unknown', path: 'inner', keys: ['secretkey', 'x'] },
        { kind: 'unknown', path: '', keys: ['extra', 'other'] },
      ],
    });
  });

  it('tells a missing key from a wrong one, with the path of each', () => {
    const result = validate(schema, { port: 0, level: 'loud', inner: { on: 'yes', tags: ['a', 7] } });
    expect(result).toEqual({
      ok: false,
      problems: [
        { kind: 'missing', path: 'name' },
        { kind: 'invalid', path: 'port', message: 'must be at least 1' },
        { kind: 'invalid', path: 'level', message: 'must be one of "info", "debug"' },
        { kind: 'invalid', path: 'inner.on', message: 'must be true or false, not a string' },
        { kind: 'invalid', path: 'inner.tags.1', message: 'must be a string, not a number' },
      ],
    });
  });

  it('never quotes the value it refuses', () => {
    const secret = 'AKIAVERYSECRETVALUE0';
    const result = validate(schema, { name: 123, port: secret, level: secret, inner: secret });
    expect(result.ok).toBe(false);
    expect(JSON.stringify(result)).not.toContain(secret);
  });

  it('describes the bounds, whole numbers, empty strings and short lists', () => {
    const bounds = strictObject({
      n: v.pipe(v.number(), v.integer(), v.maxValue(9)),
      m: v.pipe(v.number(), v.integer()),
      s: v.pipe(v.string(), v.minLength(1)),
      t: v.pipe(v.string(), v.minLength(16)),
      list: v.pipe(v.array(v.string()), v.minLength(2)),
    });
    const result = validate(bounds, { n: 10, m: 1.5, s: '', t: 'short', list: ['a'] });
    expect(result.ok ? [] : result.problems.map((p) => (p.kind === 'invalid' ? p.message : p.kind))).toEqual([
      'must be at most 9',
      'must be a whole number',
      'must not be empty',
      'must be at least 16 characters',
      'must list at least 2',
    ]);
  });
});

describe('strictObject', () => {
  it('refuses a list where an object belongs, at the top and inside', () => {
    expect(validate(schema, [])).toEqual({
      ok: false,
      problems: [{ kind: 'invalid', path: '', message: 'must be an object, not a list' }],
    });
    expect(validate(schema, { name: 'x', inner: ['on'] })).toEqual({
      ok: false,
      problems: [{ kind: 'invalid', path: 'inner', message: 'must be an object, not a list' }],
    });
  });
});
