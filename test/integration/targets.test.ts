// One conformance suite for every Target: the directory target (also on exFAT, which has no hard
// links) and the S3 target on radosgw.
import { randomBytes } from 'node:crypto';
import { linkSync } from 'node:fs';
import { Readable } from 'node:stream';
import { chmod, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupError } from '../../src/errors.js';
import { DirTarget } from '../../src/targets/dir.js';
import type { Target } from '../../src/targets/target.js';
import { mountExfat, type Mounted } from '../fixtures/exfat.js';
import { startFaultProxy } from '../fixtures/fault-proxy.js';
import { stackS3Target } from '../fixtures/s3-target.js';
import { byteStream } from '../fixtures/deis-sample.js';
import { describeWithStack, tempDir, unique } from './helpers.js';

const signal = AbortSignal.timeout(120_000);

async function read(target: Target, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await target.get(key, { signal })) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A stream that yields some bytes and then fails, as a dropped source connection does. */
function failingStream(): Readable {
  return Readable.from(
    (async function* () {
      yield Buffer.from('partial data');
      await new Promise((r) => setTimeout(r, 10));
      throw new Error('source connection dropped');
    })(),
  );
}

function conformance(name: string, make: () => Target): void {
  it(`${name}: put, get, stat, list and remove behave as the interface states`, async () => {
    const target = make();
    await target.put('a/b/one', Readable.from([Buffer.from('one')]), { signal, size: 3 });
    await target.put('a/two', Readable.from([Buffer.from('two!')]), { signal });
    await target.put('a/b/one', Readable.from([Buffer.from('ONE')]), { signal, size: 3 });
    await target.put('ab', Readable.from([Buffer.alloc(0)]), { signal, size: 0 });
    expect((await read(target, 'a/b/one')).toString()).toBe('ONE');
    expect(await target.stat('a/two', { signal })).toEqual({ key: 'a/two', size: 4 });
    expect(await target.stat('a/missing', { signal })).toBeUndefined();
    await expect(target.get('a/missing', { signal })).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
    await expect(target.get('a/missing', { signal })).rejects.toBeInstanceOf(BackupError);
    const listed = async (prefix: string) => {
      const keys: string[] = [];
      for await (const info of target.list(prefix, { signal })) keys.push(info.key);
      return keys.sort();
    };
    expect(await listed('a/')).toEqual(['a/b/one', 'a/two']);
    const keys: string[] = [];
    for await (const key of target.listKeys('a', { signal })) keys.push(key);
    expect(keys.sort()).toEqual(['a/b/one', 'a/two', 'ab']);
    expect(await listed('a')).toEqual(['a/b/one', 'a/two', 'ab']);
    expect(await listed('zzz/')).toEqual([]);
    await target.remove('a/two', { signal });
    await target.remove('a/two', { signal });
    expect(await listed('a/')).toEqual(['a/b/one']);
  });

  it(`${name}: lists every key across many folders, and a listing left early stops cleanly`, async () => {
    const target = make();
    // More folders than the directory target reads ahead (8), some nested, one key in each.
    const keys = Array.from({ length: 20 }, (_, i) => `fan/${i.toString(16).padStart(2, '0')}/k${i}`);
    keys.push('fan/0a/deeper/k', 'fan/top');
    for (const key of keys)
      await target.put(key, Readable.from([Buffer.from(key)]), { signal, size: key.length });
    const all: string[] = [];
    for await (const key of target.listKeys('fan/', { signal })) all.push(key);
    expect(all.sort()).toEqual([...keys].sort());
    const inOne: string[] = [];
    for await (const info of target.list('fan/0a/', { signal })) inOne.push(info.key);
    expect(inOne.sort()).toEqual(['fan/0a/deeper/k', 'fan/0a/k10']);
    let seen = 0;
    for await (const key of target.listKeys('fan/', { signal })) {
      expect(keys).toContain(key);
      if (++seen === 3) break;
    }
    expect(seen).toBe(3);
  });

  it(`${name}: a put whose body fails leaves no object, its size announced or not`, async () => {
    const target = make();
    await expect(target.put('broken/key', failingStream(), { signal })).rejects.toThrow(
      /source connection dropped/,
    );
    // Announced as 1 MiB: on a directory, larger than a body it gathers whole, so written in batches.
    await expect(
      target.put('broken/sized', failingStream(), { signal, size: 1024 * 1024, deferSync: true }),
    ).rejects.toThrow(/source connection dropped/);
    expect(await target.stat('broken/key', { signal })).toBeUndefined();
    expect(await target.stat('broken/sized', { signal })).toBeUndefined();
    const keys: string[] = [];
    for await (const info of target.list('broken', { signal })) keys.push(info.key);
    expect(keys).toEqual([]);
  });

  it(`${name}: streams 40 MiB bodies of unknown and of announced size, plain and deferred, byte for byte`, async () => {
    const target = make();
    const data = randomBytes(40 * 1024 * 1024);
    const body = (): Readable =>
      Readable.from(
        (function* () {
          for (let at = 0; at < data.length; at += 1024 * 1024) yield data.subarray(at, at + 1024 * 1024);
        })(),
      );
    // A network body's chunks: 64 KiB, and the odd shorter one.
    const chunked = (): Readable =>
      Readable.from(
        (function* () {
          for (let at = 0; at < data.length;) {
            const length = at % (1024 * 1024) === 0 ? 1000 : 64 * 1024;
            yield data.subarray(at, at + length);
            at += length;
          }
        })(),
      );
    await target.put('big/body', body(), { signal });
    await target.put('big/deferred', body(), { signal, deferSync: true });
    await target.put('big/sized', chunked(), { signal, size: data.length });
    await target.put('big/sized-deferred', body(), { signal, size: data.length, deferSync: true });
    await target.put('big/manifest', Readable.from([Buffer.from('{}')]), { signal, size: 2 });
    expect(await target.stat('big/body', { signal })).toEqual({ key: 'big/body', size: data.length });
    for (const key of ['big/body', 'big/deferred', 'big/sized', 'big/sized-deferred']) {
      expect((await read(target, key)).equals(data), key).toBe(true);
    }
  });

  it(`${name}: deferred puts read back at once, replace existing keys and precede a plain put`, async () => {
    const target = make();
    await target.put('blobs/aa/old', Readable.from([Buffer.from('old')]), { signal, size: 3 });
    for (const [key, body] of [
      ['blobs/aa/new', 'small new body'],
      ['blobs/aa/old', 'replaced'],
    ] as const) {
      await target.put(key, Readable.from([Buffer.from(body)]), {
        signal,
        size: Buffer.byteLength(body),
        deferSync: true,
      });
      expect((await read(target, key)).toString()).toBe(body);
    }
    await target.put('blobs/bb/large', byteStream('deferred-large', 3 * 1024 * 1024), {
      signal,
      deferSync: true,
    });
    await target.put('snapshots/x/manifest.json', Readable.from([Buffer.from('{}')]), { signal, size: 2 });
    const keys: string[] = [];
    for await (const info of target.list('', { signal })) keys.push(info.key);
    expect(keys.sort()).toEqual([
      'blobs/aa/new',
      'blobs/aa/old',
      'blobs/bb/large',
      'snapshots/x/manifest.json',
    ]);
    expect(await target.stat('blobs/bb/large', { signal })).toEqual({
      key: 'blobs/bb/large',
      size: 3 * 1024 * 1024,
    });
  });

  it(`${name}: refuses keys that would leave its root`, async () => {
    const target = make();
    await expect(target.put('../escape', Readable.from([Buffer.from('x')]), { signal })).rejects.toThrow(
      /invalid target key/,
    );
    await expect(target.stat('/abs', { signal })).rejects.toThrow(/invalid target key/);
  });
}

describeWithStack('targets', (stack) => {
  conformance('dir', () => new DirTarget(tempDir('dir-target')));
  conformance('s3', () => stackS3Target(stack, unique('conformance')));

  it('dir: fails, and does not spin, under a folder where mkdir says ENOENT although its parent exists', async () => {
    // /proc refuses new folders with ENOENT: Node's recursive mkdir loops there for ever.
    for (const body of [Buffer.from('small'), Buffer.alloc(1024 * 1024)]) {
      const target = new DirTarget(`/proc/${unique('no-such')}`);
      await expect(
        target.put('snapshots/x/run.json', Readable.from([body]), { signal, size: body.length }),
      ).rejects.toThrow(/ENOENT/);
    }
  });

  describe('on a file system without hard links', () => {
    // Deferred puts cannot link their temporary to the key there: each is synced and renamed.
    let exfat: Mounted;
    beforeAll(() => {
      exfat = mountExfat(tempDir('exfat-target'));
    });
    afterAll(() => {
      exfat.unmount();
    });
    it('exFAT refuses hard links (what these tests rely on)', async () => {
      const file = join(exfat.path, 'link-probe');
      await writeFile(file, 'x');
      let code: string | undefined;
      try {
        linkSync(file, `${file}-2`);
      } catch (err) {
        code = (err as NodeJS.ErrnoException).code;
      }
      expect(code).toBe('EPERM');
    });
    conformance('dir on exFAT', () => new DirTarget(join(exfat.path, unique('conformance'))));
  });

  it('s3: leaves a body whose reader is slower than the target alone, past target.timeoutMs', async () => {
    // A backup reads the previous index only as fast as the listing moves: with every transfer on
    // a large object, that stream may wait longer than the timeout with its bytes unread.
    const target = stackS3Target(stack, unique('slow-reader'), { timeoutMs: 300 });
    const body = randomBytes(8 * 1024 * 1024);
    await target.put('index', Readable.from([body]), { signal, size: body.length });
    const stream = await target.get('index', { signal });
    const chunks: Buffer[] = [];
    const iterator = stream[Symbol.asyncIterator]();
    chunks.push((await iterator.next()).value as Buffer);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) {
      chunks.push(next.value as Buffer);
    }
    expect(Buffer.concat(chunks).equals(body)).toBe(true);
  });

  it('s3: names a missing bucket and its fix on every call, not a missing key', async () => {
    const bucket = `${stack.targetBucket}-${unique('none')}`;
    const target = stackS3Target(stack, 'p', { bucket });
    const fix = `NoSuchBucket; create bucket ${bucket} or fix target.bucket`;
    const calls: [string, () => Promise<unknown>][] = [
      ['get k', () => target.get('k', { signal })],
      [
        'list snapshots/',
        async () => await target.list('snapshots/', { signal })[Symbol.asyncIterator]().next(),
      ],
      ['put k', () => target.put('k', Readable.from([Buffer.from('x')]), { signal, size: 1 })],
      ['remove k', () => target.remove('k', { signal })],
      // A HEAD's 404 has no body to say which is missing: the target asks about the bucket.
      ['stat k', () => target.stat('k', { signal })],
    ];
    for (const [call, run] of calls) {
      await expect(run(), call).rejects.toThrow(`${call} in s3://${bucket}/p: ${fix}`);
    }
  });

  it('s3: stores nothing for a body longer than announced, the extra bytes in its last buffer', async () => {
    const target = stackS3Target(stack, unique('s3-long'));
    await expect(
      target.put('blobs/cc/long', Readable.from([Buffer.from('four')]), { signal, size: 3 }),
    ).rejects.toThrow('body is 1 bytes longer than 3 bytes');
    expect(await target.stat('blobs/cc/long', { signal })).toBeUndefined();
  });

  it('s3: refuses a put whose body was damaged on the way, and stores nothing for it', async () => {
    // Over plain HTTP only the chunk signatures protect a body: TCP's checksum misses some damage.
    const proxy = await startFaultProxy(Number(new URL(stack.rgwEndpoint).port));
    try {
      const target = stackS3Target(stack, unique('damaged'), { endpoint: `http://127.0.0.1:${proxy.port}` });
      for (const size of [3 * 1024 * 1024, 12 * 1024 * 1024]) {
        const flipped = proxy.flipAt('up', 2 * 1024 * 1024);
        const put = target.put(`key-${size}`, Readable.from([randomBytes(size)]), { signal, size });
        await expect(put).rejects.toMatchObject({
          code: 'ERR_TARGET',
          message: expect.stringMatching(
            new RegExp(`^put key-${size} in s3://.*: (XAmzContentSHA256Mismatch|SignatureDoesNotMatch);`),
          ) as unknown,
        });
        await flipped;
        expect(await target.stat(`key-${size}`, { signal })).toBeUndefined();
      }
    } finally {
      await proxy.cut();
    }
  });
});

/** Runs fn with PATH set to `path`: the `sync` the directory target finds, or none. */
async function withPath(path: string, fn: () => Promise<void>): Promise<void> {
  const saved = process.env['PATH'];
  process.env['PATH'] = path;
  try {
    await fn();
  } finally {
    process.env['PATH'] = saved;
  }
}

function putDeferred(target: Target): Promise<void> {
  return target.put('blobs/aa/one', Readable.from([Buffer.from('one')]), {
    signal,
    size: 3,
    deferSync: true,
  });
}

function putManifest(target: Target): Promise<void> {
  return target.put('snapshots/x/manifest.json', Readable.from([Buffer.from('{}')]), { signal, size: 2 });
}

describe('dir target', () => {
  it('gets a key removed at the same time whole or as ERR_NOT_FOUND, and no folder as a key', async () => {
    // A lock file released, or a restore point forgotten, while another reader gets it: the
    // reader sees the bytes or ERR_NOT_FOUND, never an ENOENT from the stream's first read.
    const target = new DirTarget(tempDir('dir-get-removed'));
    const body = randomBytes(200 * 1024);
    const seen = { whole: 0, notFound: 0 };
    for (let i = 0; i < 200; i++) {
      await target.put('locks/one.json', Readable.from([body]), { signal, size: body.length });
      const removing = target.remove('locks/one.json', { signal });
      try {
        expect((await read(target, 'locks/one.json')).equals(body)).toBe(true);
        seen.whole++;
      } catch (err) {
        expect(err).toMatchObject({ code: 'ERR_NOT_FOUND' });
        seen.notFound++;
      }
      await removing;
    }
    expect(seen.whole + seen.notFound).toBe(200);
    await target.put('a/b/c', Readable.from([Buffer.from('c')]), { signal, size: 1 });
    await expect(target.get('a/b', { signal })).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
    await expect(target.get('a/b/c/d', { signal })).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
  });

  it('fails a plain put, and stores nothing for it, when syncing earlier deferred puts fails', async () => {
    const root = tempDir('dir-syncfail');
    // A `sync` that answers the target's first probe and fails every later call, as a disk
    // reporting a write error at syncfs would.
    const bin = tempDir('fake-sync');
    const script = join(bin, 'sync');
    await writeFile(
      script,
      `#!/bin/sh\nif [ -e "${bin}/probed" ]; then echo "sync: error syncing '$2': Input/output error" >&2; exit 1; fi\ntouch "${bin}/probed"\n`,
    );
    await chmod(script, 0o755);
    await withPath(`${bin}:${process.env['PATH'] ?? ''}`, async () => {
      const target = new DirTarget(root);
      await putDeferred(target);
      await expect(putManifest(target)).rejects.toThrow(/^sync dir:.*Input\/output error/);
      expect(await target.stat('snapshots/x/manifest.json', { signal })).toBeUndefined();
    });
  });

  it('gathers a small body only up to its announced size: a longer one stores nothing', async () => {
    const target = new DirTarget(tempDir('dir-long'));
    await expect(
      target.put('blobs/cc/long', Readable.from([Buffer.from('four')]), { signal, size: 3, deferSync: true }),
    ).rejects.toThrow(/body longer than its announced 3 bytes/);
    expect(await target.stat('blobs/cc/long', { signal })).toBeUndefined();
  });

  it('stores a put whose folder a remove of the last other key takes away at the same time', async () => {
    // The remove rmdirs the folder it empties on a pool thread while the put makes and opens its
    // file there: the put makes the folder again and succeeds, small bodies and large.
    const target = new DirTarget(tempDir('dir-folder-race'));
    const large = randomBytes(200 * 1024);
    for (let i = 0; i < 300; i++) {
      const folder = `f/${i % 7}`;
      await target.put(`${folder}/other`, Readable.from([Buffer.from('o')]), { signal, size: 1 });
      const body = i % 2 === 0 ? Buffer.from(`small ${i}`) : large;
      const removing = target.remove(`${folder}/other`, { signal });
      await target.put(`${folder}/new`, Readable.from([body]), { signal, size: body.length });
      await removing;
      expect((await read(target, `${folder}/new`)).equals(body)).toBe(true);
      await target.remove(`${folder}/new`, { signal });
    }
  });

  it('removes the folders a remove empties, up to its root, and a later put makes them again', async () => {
    const root = tempDir('dir-folders');
    const target = new DirTarget(root);
    await target.put('snapshots/a/manifest.json', Readable.from([Buffer.from('{}')]), { signal, size: 2 });
    await target.put('snapshots/a/index', Readable.from([Buffer.from('i')]), { signal, size: 1 });
    await target.put('snapshots/b/manifest.json', Readable.from([Buffer.from('{}')]), { signal, size: 2 });
    await target.remove('snapshots/a/manifest.json', { signal });
    expect((await readdir(join(root, 'snapshots'))).sort()).toEqual(['a', 'b']);
    await target.remove('snapshots/a/index', { signal });
    expect(await readdir(join(root, 'snapshots'))).toEqual(['b']);
    await target.remove('snapshots/b/manifest.json', { signal });
    expect(await readdir(root)).toEqual([]);
    await target.put('snapshots/b/x', byteStream('again', 200 * 1024), { signal, deferSync: true });
    await target.put('snapshots/c/y', Readable.from([Buffer.from('y')]), {
      signal,
      size: 1,
      deferSync: true,
    });
    expect(await target.stat('snapshots/b/x', { signal })).toEqual({
      key: 'snapshots/b/x',
      size: 200 * 1024,
    });
    expect((await read(target, 'snapshots/c/y')).toString()).toBe('y');
  });

  it('stores deferred puts durably one by one when `sync -f` cannot run', async () => {
    const root = tempDir('dir-nosync');
    await withPath('/nonexistent', async () => {
      const target = new DirTarget(root);
      await putDeferred(target);
      await putManifest(target);
      expect((await read(target, 'blobs/aa/one')).toString()).toBe('one');
    });
    expect((await readdir(join(root, 'blobs', 'aa'))).sort()).toEqual(['one']);
  });
});
