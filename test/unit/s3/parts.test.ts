import { createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  BodyParts,
  chunked,
  fittingPartSize,
  growingPartSize,
  MAX_PARTS,
  multipartEtag,
} from '../../../src/s3/parts.js';

const MiB = 1024 * 1024;

async function collect(parts: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const part of parts) out.push(part);
  return out;
}

describe('part sizes', () => {
  it('grow by the part size every 1,000 parts, so 10,000 parts hold 55,000 of them', () => {
    const sizeOf = growingPartSize(5 * MiB);
    expect([0, 999, 1000, 1999, 2000, 9999].map((i) => sizeOf(i) / MiB)).toEqual([5, 5, 10, 10, 15, 50]);
    let total = 0;
    for (let i = 0; i < MAX_PARTS; i++) total += sizeOf(i);
    expect(total).toBe(55_000 * 5 * MiB);
  });

  it('fit a body of known length into at most 10,000 parts', () => {
    expect(fittingPartSize(40 * 1024 * MiB, 5 * MiB)).toBe(5 * MiB);
    const size = 60 * 1024 * MiB + 7;
    const partSize = fittingPartSize(size, 5 * MiB);
    expect(partSize).toBeGreaterThan(5 * MiB);
    expect(Math.ceil(size / partSize)).toBeLessThanOrEqual(MAX_PARTS);
  });
});

describe('chunked', () => {
  it('cuts a stream into buffers of the sizes asked for, the last shorter', async () => {
    const body = Buffer.from(Array.from({ length: 40 }, (_, i) => i));
    const pieces = [body.subarray(0, 3), body.subarray(3, 17), body.subarray(17)];
    const seen: Buffer[] = [];
    const parts = await collect(
      chunked(
        Readable.from(pieces),
        (i) => 5 + 5 * Math.floor(i / 2),
        (chunk) => seen.push(chunk),
      ),
    );
    expect(parts.map((p) => p.length)).toEqual([5, 5, 10, 10, 10]);
    expect(Buffer.concat(parts).equals(body)).toBe(true);
    expect(Buffer.concat(seen).equals(body)).toBe(true);
  });
});

describe('multipartEtag', () => {
  const md5 = (data: Buffer): Buffer => createHash('md5').update(data).digest();
  const body = Buffer.from(Array.from({ length: 23 }, (_, i) => i));

  it("is the md5 of the parts' md5s and their count, wherever the buffers break", async () => {
    const parts = [0, 5, 10, 15, 20].map((at) => md5(body.subarray(at, at + 5)));
    const want = `${md5(Buffer.concat(parts)).toString('hex')}-5`;
    expect(await multipartEtag(Readable.from([body]), 5)).toBe(want);
    expect(
      await multipartEtag(Readable.from([body.subarray(0, 3), body.subarray(3, 17), body.subarray(17)]), 5),
    ).toBe(want);
    expect(await multipartEtag(Readable.from([...body].map((b) => Buffer.from([b]))), 5)).toBe(want);
  });

  it('ends on a whole part without an empty one, and gives an empty body one empty part', async () => {
    const whole = body.subarray(0, 20);
    const parts = [0, 10].map((at) => md5(whole.subarray(at, at + 10)));
    expect(await multipartEtag(Readable.from([whole]), 10)).toBe(
      `${md5(Buffer.concat(parts)).toString('hex')}-2`,
    );
    expect(await multipartEtag(Readable.from([]), 10)).toBe(`${md5(md5(Buffer.alloc(0))).toString('hex')}-1`);
  });
});

describe('BodyParts', () => {
  it('hands out a body part by part, and fails one shorter or longer than announced', async () => {
    const seen: string[] = [];
    const body = Readable.from([Buffer.from('abcde'), Buffer.from('fgh')]);
    const reader = new BodyParts(body, 8, (chunk) => seen.push(chunk.toString()));
    expect(Buffer.concat(await collect(reader.next(3))).toString()).toBe('abc');
    expect(Buffer.concat(await collect(reader.next(5))).toString()).toBe('defgh');
    expect(seen).toEqual(['abc', 'de', 'fgh']);

    const short = new BodyParts(Readable.from([Buffer.from('abc')]), 8);
    await expect(collect(short.next(8))).rejects.toThrow('body ended after 3 of 8 bytes');
    expect(short.failure?.message).toBe('body ended after 3 of 8 bytes');

    // The last part does not end before the body does: a longer body fails it.
    const long = new BodyParts(Readable.from([Buffer.from('abcdefgh'), Buffer.from('ij')]), 8);
    await expect(collect(long.next(8))).rejects.toThrow('body is 2 bytes longer than 8 bytes');
    // Also when the bytes beyond come in the buffer that completes the last part.
    const oneBuffer = new BodyParts(Readable.from([Buffer.from('abcdefghij')]), 8);
    await expect(collect(oneBuffer.next(8))).rejects.toThrow('body is 2 bytes longer than 8 bytes');

    const empty = new BodyParts(Readable.from([]), 0);
    expect(await collect(empty.next(0))).toEqual([]);
  });

  it('keeps the body’s own failure, not one its reader throws back in', async () => {
    const failing = new BodyParts(
      Readable.from(
        (async function* () {
          yield Buffer.from('ab');
          await Promise.resolve();
          throw new Error('source dropped');
        })(),
      ),
      8,
    );
    await expect(collect(failing.next(8))).rejects.toThrow('source dropped');
    expect(failing.failure?.message).toBe('source dropped');

    // A request that fails destroys the part it sends with its own error: that is not the body's
    // failure, and the body is left paused, unread.
    const body = new PassThrough();
    body.write('abcd');
    const reader = new BodyParts(body, 8);
    const sent = reader.next(8);
    sent.once('data', () => {
      sent.destroy(new Error('ECONNRESET'));
      setTimeout(() => body.write('efgh'), 10);
    });
    await expect(collect(sent)).rejects.toThrow('ECONNRESET');
    expect(reader.failure).toBeUndefined();
    expect(body.isPaused()).toBe(true);
  });
});
