// createParallelGzip: whatever the input length and the block edges, the output is one gzip file
// that zlib and GNU gzip both read back to the exact input; errors reach the reader.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { chain, createParallelGzip } from '../../src/streams.js';

/** Deterministic, partly compressible bytes. */
function sample(size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i++) out[i] = (i * 7 + (i >> 9)) % 251 < 64 ? 97 : (i * 31) % 256;
  return out;
}

/** Feeds `input` in chunks of `chunk` bytes through a parallel gzip and collects the output. */
async function compress(input: Buffer, chunk: number, blockSize: number, parallel = 3): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < input.length; i += chunk) pieces.push(input.subarray(i, i + chunk));
  const out: Buffer[] = [];
  for await (const piece of chain(Readable.from(pieces), createParallelGzip({ blockSize, parallel })))
    out.push(piece as Buffer);
  return Buffer.concat(out);
}

describe('createParallelGzip', () => {
  const block = 1000;
  it.each([0, 1, block - 1, block, block + 1, 3 * block, 7 * block + 13])(
    'round-trips %i bytes through zlib and GNU gzip',
    async (size) => {
      const input = sample(size);
      for (const chunk of [1, 333, 4096]) {
        const gz = await compress(input, chunk, block);
        expect(gunzipSync(gz).equals(input)).toBe(true);
        const viaGzip = execFileSync('gzip', ['-dc'], { input: gz });
        expect(createHash('sha256').update(viaGzip).digest('hex')).toBe(
          createHash('sha256').update(input).digest('hex'),
        );
      }
    },
  );

  it('gives the same bytes whatever the parallelism', async () => {
    const input = sample(20 * block + 5);
    const one = await compress(input, 777, block, 1);
    expect(await compress(input, 777, block, 4)).toEqual(one);
  });

  it('passes a source error on to the reader', async () => {
    const failing = new Readable({
      read() {
        this.push(sample(5 * block));
        this.destroy(new Error('source broke'));
      },
    });
    const reading = (async () => {
      let bytes = 0;
      for await (const piece of chain(failing, createParallelGzip({ blockSize: block })))
        bytes += (piece as Buffer).length;
      return bytes;
    })();
    await expect(reading).rejects.toThrow('source broke');
  });
});
