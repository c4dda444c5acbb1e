// Counting a volume archive that comes from a host: entries and file bytes as a local volume counts
// them, and a stream that is no whole tar.gz said to be so.
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { emptyCounts } from '../../../src/repository/manifest.js';
import { countArchive } from '../../../src/sources/volume.js';

/** A .tar.gz of a directory, a file of `size` bytes and a symlink. */
async function archive(size: number): Promise<Buffer> {
  const tar = pack();
  tar.entry({ name: './', type: 'directory' });
  tar.entry({ name: './logs/deis-router.log', size }, Buffer.alloc(size, 'x'));
  tar.entry({ name: './latest', type: 'symlink', linkname: 'logs/deis-router.log' });
  tar.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of tar as unknown as AsyncIterable<Buffer>) chunks.push(chunk);
  return gzipSync(Buffer.concat(chunks));
}

describe('countArchive', () => {
  it('counts every entry and the bytes of the files', async () => {
    const counts = emptyCounts();
    expect(await countArchive(Readable.from([await archive(70_000)]), counts)).toBeUndefined();
    expect(counts).toMatchObject({ objects: 3, bytesRead: 70_000 });
  });

  it('says why a stream is not a whole tar.gz', async () => {
    const whole = await archive(70_000);
    expect(await countArchive(Readable.from([Buffer.from('not gzip at all')]), emptyCounts())).toMatch(
      /incorrect header check/,
    );
    expect(await countArchive(Readable.from([whole.subarray(0, whole.length - 20)]), emptyCounts())).toMatch(
      /unexpected end of file/,
    );
  });
});
