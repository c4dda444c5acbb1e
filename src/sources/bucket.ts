// A store-gateway bucket (db_wal, registry): every object with its content-type and user metadata,
// incremental against the previous restore point by key, size and ETag, with bounded concurrency.
import { setMaxListeners } from 'node:events';
import { createGzip } from 'node:zlib';
import { BackupError, describeError } from '../errors.js';
import { chain } from '../streams.js';
import { blobKey, bucketIndexName } from '../repository/layout.js';
import { emptyCounts, type IndexEntry, type SourceRecord } from '../repository/manifest.js';
import { attemptsNote, isUnreachable, S3Error, type ListedObject, type S3Client } from '../s3/client.js';
import { Limiter } from '../concurrency.js';
import { isTagFile, readTagged, RegistryImages, type SmallFile } from '../repository/registry-check.js';
import { IndexLines } from './index-lines.js';
import { Findings, type Source, type SourceRunContext } from './source.js';

/** Settings of one bucket source. */
export interface BucketSourceOptions {
  bucket: string;
  client: S3Client;
  listVersion: 1 | 2;
  /** Objects listed and looked up at once. */
  concurrency: number;
  /** Reads from the gateway at once, shared by the buckets of one run (default: `concurrency` of its own). */
  transfers?: Limiter;
}

/** One bucket of the store-gateway. */
export class BucketSource implements Source {
  readonly id: string;
  readonly kind = 'bucket' as const;
  private readonly options: BucketSourceOptions;

  constructor(options: BucketSourceOptions) {
    this.options = options;
    this.id = `bucket:${options.bucket}`;
  }

  async backup(ctx: SourceRunContext): Promise<SourceRecord> {
    // Each concurrent transfer listens on the run's signal (request, target write, pipeline).
    setMaxListeners(16 + 4 * this.options.concurrency, ctx.signal);
    const { bucket, client } = this.options;
    const origin = `${bucket} at ${client.endpoint.origin}`;
    const counts = emptyCounts();
    const findings = new Findings(counts);
    const transfers = this.options.transfers ?? new Limiter(this.options.concurrency);
    const previous = await this.previousIndex(ctx, findings);
    // The new index is written as the objects settle, in listing order; its put runs alongside.
    const index = new IndexLines();
    const putting = ctx.writer.putArtifact(bucketIndexName(bucket), chain(index.readable, createGzip()), {
      signal: ctx.signal,
    });
    putting.catch(() => undefined);
    const listing = client.listObjects(bucket, { signal: ctx.signal, listVersion: this.options.listVersion });
    const iterator = listing[Symbol.asyncIterator]();
    let listError: unknown;
    // A target that refuses a body (full, gone) would refuse every later one too: the source fails
    // rather than commit a restore point without bodies that were there to read.
    let targetError: BackupError | undefined;
    let indexError: unknown;

    // docker-registry's image files, from every key; and the tags' files this run stored, whose
    // images (and their parents) must be in the copy too (see checkNewTags).
    const images = new RegistryImages();
    const newTags: SmallFile[] = [];

    /** The object's index entry, or undefined when it vanished before it was read. */
    const capture = async (
      object: ListedObject,
      known: IndexEntry | undefined,
    ): Promise<IndexEntry | undefined> => {
      if (known && known.size === object.size && known.etag === object.etag) {
        counts.unchanged++;
        return { ...known, lastModified: object.lastModified };
      }
      if (ctx.resume) {
        const reused = await this.reuse(object, ctx);
        if (reused) {
          counts.resumed = (counts.resumed ?? 0) + 1;
          return noteTag(reused);
        }
      }
      const fetched = await transfers.run(() => fetch(object));
      return fetched && noteTag(fetched);
    };

    /** Notes a tag's file this run stored. */
    const noteTag = (entry: IndexEntry): IndexEntry => {
      if (isTagFile(entry.key, entry.size)) newTags.push({ key: entry.key, blob: entry.blob });
      return entry;
    };

    /** Reads an object from the gateway into a blob: its index entry, or undefined when it vanished. */
    const fetch = async (object: ListedObject): Promise<IndexEntry | undefined> => {
      const got = await client.getObject(bucket, object.key, { signal: ctx.signal });
      if (!got) {
        counts.vanished++;
        ctx.log.debug({ key: object.key }, 'object vanished before it was read');
        return undefined;
      }
      const { head, body, recycle } = got;
      // A body the gateway stopped sending says only "aborted": name the gateway instead.
      let cut: Error | undefined;
      body.once('error', (err: Error) => {
        cut = err;
      });
      const stored = await ctx.writer
        .putBlob({ bucket, key: object.key, size: head.size, etag: head.etag }, body, {
          signal: ctx.signal,
          release: recycle,
        })
        .catch((err: unknown) => {
          if (cut === undefined || err instanceof BackupError) throw err;
          const code = (cut as NodeJS.ErrnoException).code ?? cut.message;
          throw new BackupError(
            'ERR_GATEWAY',
            `read from gateway ${client.endpoint.origin} cut short (${code})`,
            { cause: err },
          );
        });
      counts.bytesRead += stored.size;
      counts.bytesStored += stored.size;
      ctx.log.debug({ key: object.key, bytes: stored.size }, 'object stored');
      return {
        key: object.key,
        size: stored.size,
        etag: head.etag,
        lastModified: object.lastModified,
        ...(head.contentType === undefined ? {} : { contentType: head.contentType }),
        metadata: head.metadata,
        sha256: stored.sha256,
        blob: stored.key,
      };
    };

    // The listing and the previous index are both in key order: each listed key is looked up by
    // walking the index forward, one step at a time across the workers, so neither is held whole.
    // Each listed object gets its position in the listing, which orders the new index.
    let step: Promise<unknown> = Promise.resolve();
    let listed = 0;
    const nextObject = (): Promise<{
      next: IteratorResult<ListedObject>;
      known: IndexEntry | undefined;
      seq: number;
    }> => {
      const taken = step.then(async () => {
        const next = await iterator.next();
        return {
          next,
          known: next.done ? undefined : await previous.find(next.value.key),
          seq: next.done ? -1 : listed++,
        };
      });
      step = taken.catch(() => undefined);
      return taken;
    };
    const worker = async (): Promise<void> => {
      for (;;) {
        let next: IteratorResult<ListedObject>;
        let known: IndexEntry | undefined;
        let seq: number;
        try {
          ({ next, known, seq } = await nextObject());
        } catch (err) {
          listError ??= err;
          return;
        }
        if (next.done || listError !== undefined || targetError !== undefined || indexError !== undefined)
          return;
        let entry: IndexEntry | undefined;
        try {
          entry = await capture(next.value, known);
        } catch (err) {
          ctx.signal.throwIfAborted();
          if (err instanceof BackupError && err.code === 'ERR_TARGET') {
            targetError ??= err;
            return;
          }
          // A gateway that refuses connections or stopped answering serves no later object either:
          // the source fails (naming the gateway) rather than commit a restore point missing
          // everything after.
          if (isUnreachable(err)) {
            listError ??= err;
            return;
          }
          findings.fail(`${next.value.key}: ${describeError(err)}`);
          ctx.log.warn({ key: next.value.key, err }, 'object not captured');
        }
        if (entry) images.add(entry.key, entry.blob);
        try {
          await index.settle(seq, entry);
        } catch (err) {
          // The index's put has failed: the source fails with that put's error (below).
          indexError ??= err;
          return;
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: this.options.concurrency }, worker));
      ctx.signal.throwIfAborted();
      await previous.close();
      if (listError !== undefined) throw gatewayError(listError, bucket, client.endpoint.origin);
      if (targetError !== undefined) throw targetError;
      counts.objects = index.lines;
      if (counts.failed > 0 && index.lines === 0) {
        throw new BackupError(
          'ERR_SOURCE',
          `bucket ${bucket}: no object could be read (${findings.errors[0] ?? 'unknown error'})`,
        );
      }
      if (indexError === undefined) index.end();
    } catch (err) {
      index.fail(err as Error);
      await putting.catch(() => undefined);
      throw err;
    }
    const storedIndex = await putting;
    counts.bytesStored += storedIndex.size;
    await checkNewTags(images, newTags, ctx, findings);
    ctx.log.info({ bucket, ...counts }, 'bucket captured');
    return {
      id: this.id,
      kind: 'bucket',
      bucket,
      status: counts.failed > 0 ? 'partial' : 'success',
      origin,
      counts,
      warnings: findings.warnings,
      errors: findings.errors,
      artifacts: [{ name: bucketIndexName(bucket), ...storedIndex }],
    };
  }

  /**
   * The entry of an object whose body an interrupted run already stored: the blob exists with the
   * listed size, the gateway's HEAD still shows the listed version, and the stored bytes are hashed
   * back from the target. undefined when anything differs: the object is then read as usual.
   */
  private async reuse(object: ListedObject, ctx: SourceRunContext): Promise<IndexEntry | undefined> {
    const { bucket, client } = this.options;
    const blob = blobKey({ bucket, key: object.key, size: object.size, etag: object.etag });
    const stored = await ctx.repository.target.stat(blob, { signal: ctx.signal });
    if (stored?.size !== object.size) return undefined;
    const head = await client.headObject(bucket, object.key, { signal: ctx.signal });
    if (head?.etag !== object.etag || head.size !== object.size) return undefined;
    const { size, sha256 } = await ctx.repository.hashStored(blob, { signal: ctx.signal });
    if (size !== object.size) return undefined;
    // The interrupted run never synced it: this run's sync before the index must cover it too.
    await ctx.writer.adoptBlob(blob, { signal: ctx.signal });
    ctx.log.debug({ key: object.key, blob }, 'object reused from an interrupted run');
    return {
      key: object.key,
      size,
      etag: head.etag,
      lastModified: object.lastModified,
      ...(head.contentType === undefined ? {} : { contentType: head.contentType }),
      metadata: head.metadata,
      sha256,
      blob,
    };
  }

  /**
   * The previous restore point's index of this bucket, walked forward by key; empty when there is
   * none. Its sha256 is checked before any entry is used. An index that cannot be read or fails
   * its sha256 only costs a full read, with a warning.
   */
  private async previousIndex(ctx: SourceRunContext, findings: Findings): Promise<PreviousIndex> {
    const record = ctx.previous?.sources.find((s) => s.kind === 'bucket' && s.bucket === this.options.bucket);
    const artifact = record?.artifacts[0];
    if (!artifact) return new PreviousIndex(undefined, () => undefined);
    const unusable = (err: unknown): void => {
      findings.warn(
        `previous index ${artifact.key} unusable (${describeError(err)}); every object read again`,
      );
    };
    try {
      // Hashing the stored bytes is cheap next to parsing them: check first, then stream the entries.
      await ctx.repository.verifyArtifact(artifact, { signal: ctx.signal });
    } catch (err) {
      ctx.signal.throwIfAborted();
      unusable(err);
      return new PreviousIndex(undefined, () => undefined);
    }
    const entries = ctx.repository.readIndex(artifact, { signal: ctx.signal })[Symbol.asyncIterator]();
    return new PreviousIndex(entries, (err) => {
      ctx.signal.throwIfAborted();
      unusable(err);
    });
  }
}

/**
 * A forward-only lookup in the previous index (sorted by key) for keys asked in ascending order,
 * as the gateway lists them. A key asked out of order is only missed (its object read again), so a
 * listing in another order costs reads, never a wrong entry.
 */
class PreviousIndex {
  private readonly entries: AsyncIterator<IndexEntry> | undefined;
  private readonly onError: (err: unknown) => void;
  private current: IndexEntry | undefined;
  private started = false;
  private done = false;

  constructor(entries: AsyncIterator<IndexEntry> | undefined, onError: (err: unknown) => void) {
    this.entries = entries;
    this.onError = onError;
    this.done = entries === undefined;
  }

  /** The entry of `key`, or undefined; entries before `key` are passed over for good. */
  async find(key: string): Promise<IndexEntry | undefined> {
    if (!this.started) {
      this.started = true;
      await this.advance();
    }
    while (!this.done && this.current !== undefined && this.current.key < key) await this.advance();
    return this.current?.key === key ? this.current : undefined;
  }

  /** Reads the index to its end, so that its stream closes and its sha256 is checked once more. */
  async close(): Promise<void> {
    while (!this.done) await this.advance();
  }

  private async advance(): Promise<void> {
    if (this.entries === undefined || this.done) return;
    try {
      const next = await this.entries.next();
      this.current = next.done ? undefined : next.value;
      this.done = next.done === true;
    } catch (err) {
      this.current = undefined;
      this.done = true;
      this.onError(err);
    }
  }
}

/** Turns a listing failure into one line naming the bucket, the gateway and the fix. */
export function gatewayError(err: unknown, bucket: string, endpoint: string): BackupError {
  if (err instanceof S3Error) {
    switch (err.s3Code) {
      case 'InvalidAccessKeyId':
      case 'SignatureDoesNotMatch':
      case 'AccessDenied':
        return new BackupError(
          'ERR_GATEWAY',
          `bucket ${bucket}: gateway ${endpoint} refused the keys (${err.s3Code}); check gateway.accessKey and gateway.secretKey, or /deis/store/gateway/accessKey and secretKey in etcd`,
          { cause: err },
        );
      case 'NoSuchBucket':
        return new BackupError(
          'ERR_GATEWAY',
          `bucket ${bucket}: does not exist on gateway ${endpoint}; check sources.buckets.names or /deis/database/bucketName and /deis/registry/bucketName`,
          { cause: err },
        );
      case 'RequestTimeout':
        return new BackupError(
          'ERR_GATEWAY',
          `bucket ${bucket}: gateway ${endpoint} stopped answering (${err.message}); check the store's health (a full Ceph cluster blocks requests), or raise gateway.timeoutMs`,
          { cause: err },
        );
      default:
        if (err.status === 0) {
          return new BackupError(
            'ERR_GATEWAY',
            `bucket ${bucket}: cannot reach gateway ${endpoint} (${err.s3Code}${attemptsNote(err.attempts)}); check gateway.endpoint or /deis/store/gateway/host and port in etcd`,
            { cause: err },
          );
        }
    }
  }
  return new BackupError(
    'ERR_GATEWAY',
    `bucket ${bucket}: listing on gateway ${endpoint} failed: ${describeError(err)}`,
    {
      cause: err,
    },
  );
}

/**
 * Warns of each tag this run stored (read or resumed) that names an image the copy lacks, holds
 * only partly (its `_inprogress` mark, or its layer not yet written), or has a parent it lacks: the
 * listing runs in key order, images before repositories, so an app pushed while it ran can leave
 * its new tag in the copy without the whole image. Restored, that release cannot be pulled. Only
 * the tags' files stored now are read back (a few bytes each), and the ancestry of the images they
 * name; unchanged tags are left to verify.
 */
async function checkNewTags(
  images: RegistryImages,
  newTags: readonly SmallFile[],
  ctx: SourceRunContext,
  findings: Findings,
): Promise<void> {
  if (newTags.length === 0) return;
  await readTagged(images, ctx.repository.target, newTags, { signal: ctx.signal });
  for (const message of images.tagFindings({ partial: true })) findings.warn(`registry: ${message}`);
}
