import { describe, expect, it } from 'vitest';
import { parseJsonBody, RequestError, RouteTable } from '../../../src/http/requests.js';

function refusal(text: string): { status: number; message: string } {
  try {
    parseJsonBody(text);
  } catch (err) {
    if (err instanceof RequestError) return { status: err.statusCode, message: err.message };
    throw err;
  }
  throw new Error(`accepted ${text}`);
}

describe('parseJsonBody', () => {
  it('parses JSON', () => {
    expect(parseJsonBody('{"only": ["buckets"], "n": [1, {"a": null}]}')).toEqual({
      only: ['buckets'],
      n: [1, { a: null }],
    });
    expect(parseJsonBody('null')).toBeNull();
  });

  it('says what is wrong with a body it refuses, without quoting it', () => {
    expect(refusal('{"only": [secret-looking')).toEqual({
      status: 400,
      message: 'body is not valid JSON; send a JSON object, such as {}',
    });
    for (const empty of ['', ' \n'])
      expect(refusal(empty).message).toBe(
        'body is empty though Content-Type says JSON; send {}, or no Content-Type',
      );
    expect(refusal('{"__proto__": {"admin": true}}')).toEqual({
      status: 400,
      message: 'body: the key "__proto__" is not accepted',
    });
    expect(refusal('{"buckets": {"db_wal": "x", "__proto__": "y"}}').message).toBe(
      'body.buckets: the key "__proto__" is not accepted',
    );
    expect(refusal('[1, [{"__proto__": 1}]]').message).toBe('body.1.0: the key "__proto__" is not accepted');
    // Nested deeper than any request of the API (a 64 KiB body can nest 32,000 deep): refused, not
    // an overflow of the walk above answered as a 500.
    expect(refusal(`${'['.repeat(32_000)}${']'.repeat(32_000)}`)).toEqual({
      status: 400,
      message: 'body nests deeper than 32 levels; send a JSON object such as {}',
    });
    expect(parseJsonBody(`${'['.repeat(32)}${']'.repeat(32)}`)).toBeInstanceOf(Array);
    // Only the key is refused: the word as a value, or "constructor" (a valid bucket name), is fine.
    expect(parseJsonBody('{"buckets": {"constructor": "__proto__"}}')).toEqual({
      buckets: { constructor: '__proto__' },
    });
  });
});

describe('RouteTable', () => {
  const table = new RouteTable();
  table.add('GET', '/healthz');
  table.add('HEAD', '/healthz');
  table.add('POST', '/restores');
  table.add('GET', '/restores/:id');
  table.add('DELETE', '/restores/:id');

  it('names the methods of every route whose pattern the path fits', () => {
    expect(table.allowed('/healthz')).toEqual(['GET', 'HEAD']);
    expect(table.allowed('/restores')).toEqual(['POST']);
    expect(table.allowed('/restores/restore-1')).toEqual(['DELETE', 'GET']);
  });

  it('names none for a path no route has', () => {
    expect(table.allowed('/restores/a/b')).toEqual([]);
    expect(table.allowed('/restores/')).toEqual([]);
    expect(table.allowed('/healthz/')).toEqual([]);
    expect(table.allowed('/')).toEqual([]);
  });
});
