// A store-gateway bucket (db_wal, registry): every object with its content-type and user metadata,
// incremental against the previous restore point by key, size and ETag, with bounded concurrency.
import { setMaxListeners } from 'node:events';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import { BackupError, describeError } from '../errors.js';
import { chain } from '../streams.js';
import { blobKey, bucketIndexName } from '../repository/layout.js';
import { emptyCounts, type IndexEntry, type SourceRecord } from '../repository/manifest.js';
import { S3Error, type ListedObject, type S3Client } from '../s3/client.js';
import { Findings, type Source, type SourceRunContext } from './source.js';

/** Settings of one bucket source. */
export interface BucketSourceOptions {
  bucket: string;
  client: S3Client;
  listVersion: 1 | 2;
  concurrency: number;
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
    const previous = await this.previousIndex(ctx, findings);
    const entries: IndexEntry[] = [];
    const listing = client.listObjects(bucket, { signal: ctx.signal, listVersion: this.options.listVersion });
    const iterator = listing[Symbol.asyncIterator]();
    let listError: unknown;
    // A target that refuses a body (full, gone) would refuse every later one too: the source fails
    // rather than commit a restore point without bodies that were there to read.
    let targetError: BackupError | undefined;

    const capture = async (object: ListedObject): Promise<void> => {
      const known = previous.get(object.key);
      if (known && known.size === object.size && known.etag === object.etag) {
        entries.push({ ...known, lastModified: object.lastModified });
        counts.unchanged++;
        return;
      }
      if (ctx.resume) {
        const reused = await this.reuse(object, ctx);
        if (reused) {
          entries.push(reused);
          counts.resumed = (counts.resumed ?? 0) + 1;
          return;
        }
      }
      const got = await client.getObject(bucket, object.key, { signal: ctx.signal });
      if (!got) {
        counts.vanished++;
        ctx.log.debug({ key: object.key }, 'object vanished before it was read');
        return;
      }
      const { head, body } = got;
      // A body the gateway stopped sending says only "aborted": name the gateway instead.
      let cut: Error | undefined;
      body.once('error', (err: Error) => {
        cut = err;
      });
      const stored = await ctx.writer
        .putBlob({ bucket, key: object.key, size: head.size, etag: head.etag }, body, {
          signal: ctx.signal,
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
      entries.push({
        key: object.key,
        size: stored.size,
        etag: head.etag,
        lastModified: object.lastModified,
        ...(head.contentType === undefined ? {} : { contentType: head.contentType }),
        metadata: head.metadata,
        sha256: stored.sha256,
        blob: stored.key,
      });
      ctx.log.debug({ key: object.key, bytes: stored.size }, 'object stored');
    };

    const worker = async (): Promise<void> => {
      for (;;) {
        let next: IteratorResult<ListedObject>;
        try {
          next = await iterator.next();
        } catch (err) {
          listError ??= err;
          return;
        }
        if (next.done || listError !== undefined || targetError !== undefined) return;
        try {
          await capture(next.value);
        } catch (err) {
          ctx.signal.throwIfAborted();
          if (err instanceof BackupError && err.code === 'ERR_TARGET') {
            targetError ??= err;
            return;
          }
          // A gateway that refuses connections serves no later object either: the source fails
          // (naming the gateway) rather than commit a restore point missing everything after.
          if (err instanceof S3Error && err.status === 0 && UNREACHABLE.has(err.s3Code)) {
            listError ??= err;
            return;
          }
          findings.fail(`${next.value.key}: ${describeError(err)}`);
          ctx.log.warn({ key: next.value.key, err }, 'object not captured');
        }
      }
    };
    await Promise.all(Array.from({ length: this.options.concurrency }, worker));
    ctx.signal.throwIfAborted();
    if (listError !== undefined) throw gatewayError(listError, bucket, client.endpoint.origin);
    if (targetError !== undefined) throw targetError;

    counts.objects = entries.length;
    if (counts.failed > 0 && entries.length === 0) {
      throw new BackupError(
        'ERR_SOURCE',
        `bucket ${bucket}: no object could be read (${findings.errors[0] ?? 'unknown error'})`,
      );
    }
    entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const index = await ctx.writer.putArtifact(
      bucketIndexName(bucket),
      chain(Readable.from(entries.map((e) => `${JSON.stringify(e)}\n`)), createGzip()),
      { signal: ctx.signal },
    );
    counts.bytesStored += index.size;
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
      artifacts: [{ name: bucketIndexName(bucket), ...index }],
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
   * The previous restore point's index of this bucket, by key; empty when there is none. An index
   * that cannot be read or fails its sha256 only costs a full read, with a warning.
   */
  private async previousIndex(ctx: SourceRunContext, findings: Findings): Promise<Map<string, IndexEntry>> {
    const map = new Map<string, IndexEntry>();
    const record = ctx.previous?.sources.find((s) => s.kind === 'bucket' && s.bucket === this.options.bucket);
    const artifact = record?.artifacts[0];
    if (!artifact) return map;
    try {
      for await (const entry of ctx.repository.readIndex(artifact, { signal: ctx.signal }))
        map.set(entry.key, entry);
      return map;
    } catch (err) {
      ctx.signal.throwIfAborted();
      findings.warn(
        `previous index ${artifact.key} unusable (${describeError(err)}); every object read again`,
      );
      return new Map();
    }
  }
}

/** Connection errors that mean the gateway is not there at all (not one request gone wrong). */
const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

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
      default:
        if (err.status === 0) {
          return new BackupError(
            'ERR_GATEWAY',
            `bucket ${bucket}: cannot reach gateway ${endpoint} (${err.s3Code}); check gateway.endpoint or /deis/store/gateway/host and port in etcd`,
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
