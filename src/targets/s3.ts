// A target in an S3 bucket under a prefix (SigV4, any endpoint and region). Puts go through the
// project's S3 client, streamed in signed chunks; artifacts larger than a part or of unknown size go
// up as multipart uploads in parts of partSizeMiB. Everything else goes through the minio client,
// and the uploads a dead run left unfinished are listed and dropped with ListMultipartUploads and
// AbortMultipartUpload.
import { AsyncLocalStorage } from 'node:async_hooks';
import * as http from 'node:http';
import * as https from 'node:https';
import type { Readable } from 'node:stream';
import { Client, S3Error as MinioS3Error } from 'minio';
import { BackupError } from '../errors.js';
import { observed } from '../streams.js';
import { S3Client, S3Error } from '../s3/client.js';
import { fittingPartSize } from '../s3/parts.js';
import { readText } from '../s3/responses.js';
import { encodeRfc3986 } from '../s3/sign-v4.js';
import { parseUploadsPage, type UploadsPage } from '../s3/uploads.js';
import type { Secret } from '../secret.js';
import { checkKey, type ObjectInfo, type PutOptions, type Target, type UploadInfo } from './target.js';

/** Settings of an S3 target. */
export interface S3TargetOptions {
  endpoint: string;
  region: string;
  bucket: string;
  prefix: string;
  accessKey: Secret;
  secretKey: Secret;
  partSizeMiB: number;
  /** A request fails once its connection has sent and received nothing for this long (default 120 s). */
  timeoutMs?: number;
  /** Uploads asked for per ListMultipartUploads page (default 1000, the most S3 gives); tests page with fewer. */
  uploadsPageSize?: number;
}

const DEFAULT_TIMEOUT_MS = 120_000;

/**
 * How far the target's clock may be behind ours, assumed when an answer carries no Date header:
 * S3 and radosgw refuse a signed request whose time is more than 15 minutes off theirs
 * (RequestTimeTooSkewed), so while our requests are taken the clocks are at most that far apart.
 */
const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000;

/** What minio sends its requests through: node's http or https, or anything shaped like them. */
type Transport = Pick<typeof http, 'request'>;

/**
 * The signal of the call (a listing of uploads, an abort of one) whose requests minio is
 * sending: minio takes no signal, so the transport finds it here and destroys the call's requests
 * when it aborts.
 */
const requestSignal = new AsyncLocalStorage<AbortSignal>();

/** A request to the target that nothing moved on for its timeout. */
class TargetTimeout extends Error {
  readonly code = 'ETIMEDOUT';
}

/** S3-backed Target. */
export class S3Target implements Target {
  readonly name: string;
  /** An S3 PUT is durable once it returns: deferSync changes nothing. */
  readonly defersSync = false;
  /** A multipart upload whose put was killed stays until it is aborted. */
  readonly leavesUploads = true;
  /** Reads, listings, deletes and the uploads calls. */
  private readonly client: Client;
  /** Puts: each part streamed in signed chunks, where minio holds a part whole to sign it. */
  private readonly uploader: S3Client;
  private readonly timeoutMs: number;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly uploadsPageSize: number;
  private readonly partSize: number;

  constructor(options: S3TargetOptions) {
    const url = new URL(options.endpoint);
    this.bucket = options.bucket;
    this.prefix =
      options.prefix === '' || options.prefix.endsWith('/') ? options.prefix : `${options.prefix}/`;
    this.name = `s3://${options.bucket}/${this.prefix}`.replace(/\/$/, '');
    this.uploadsPageSize = options.uploadsPageSize ?? 1000;
    this.partSize = options.partSizeMiB * 1024 * 1024;
    const useSSL = url.protocol === 'https:';
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.uploader = new S3Client({
      endpoint: options.endpoint,
      accessKey: options.accessKey.reveal(),
      secretKey: options.secretKey.reveal(),
      signatureVersion: 'v4',
      signChunks: true,
      region: options.region,
      timeoutMs: this.timeoutMs,
      // Puts are as many as the run's concurrency (at most 64): none waits for a connection.
      maxSockets: 64,
    });
    this.client = new Client({
      endPoint: url.hostname,
      port: url.port ? Number(url.port) : undefined,
      useSSL,
      pathStyle: true,
      region: options.region,
      accessKey: options.accessKey.reveal(),
      secretKey: options.secretKey.reveal(),
      // Retrying is the run's decision, and minio's own retries print to the console.
      retryOptions: { disableRetry: true },
      transport: idleTimeoutTransport(useSSL ? https : http, this.timeoutMs),
      // Connections of its own, not Node's global pool: a socket another client left idle there
      // before the target went away could be taken for this one's first request and fail it.
      transportAgent: new (useSSL ? https.Agent : http.Agent)({
        keepAlive: true,
        scheduling: 'lifo',
        timeout: 5000,
      }),
    });
  }

  async put(key: string, given: Readable, opts: PutOptions): Promise<void> {
    const name = this.key(key);
    const body = opts.observe ? observed(given, opts.observe) : given;
    try {
      if (opts.size !== undefined && opts.size <= this.partSize) {
        await this.uploader.putObject(this.bucket, name, body, { signal: opts.signal, size: opts.size });
      } else {
        await this.uploader.putObjectMultipart(this.bucket, name, body, {
          signal: opts.signal,
          partSize: fittingPartSize(opts.size ?? 0, this.partSize),
          ...(opts.size === undefined ? {} : { size: opts.size }),
        });
      }
    } catch (err) {
      body.destroy();
      if (opts.signal.aborted) throw opts.signal.reason;
      // Anything but the client's own error is the body's, for the caller to report.
      if (!(err instanceof S3Error)) throw err;
      if (err.s3Code === 'BodyStalled') {
        // The object's read failed, not the target: named for the source, whose own wait is longer.
        throw new BackupError(
          'ERR_SOURCE',
          `put ${key} in ${this.name}: the body gave nothing for ${this.timeoutMs / 1000} s; check where it is read from, or raise target.timeoutMs`,
        );
      }
      throw this.wrap('put', key, err);
    }
  }

  async get(key: string, opts: { signal: AbortSignal }): Promise<Readable> {
    let stream: Readable;
    try {
      stream = await this.client.getObject(this.bucket, this.key(key));
    } catch (err) {
      if (isNotFound(err)) throw new BackupError('ERR_NOT_FOUND', `${key} not found in ${this.name}`);
      throw this.wrap('get', key, err);
    }
    const onAbort = (): void => {
      stream.destroy(opts.signal.reason as Error);
    };
    opts.signal.addEventListener('abort', onAbort, { once: true });
    stream.once('close', () => {
      opts.signal.removeEventListener('abort', onAbort);
    });
    return stream;
  }

  async stat(key: string, _opts: { signal: AbortSignal }): Promise<ObjectInfo | undefined> {
    try {
      const info = await this.client.statObject(this.bucket, this.key(key));
      return { key, size: info.size };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw this.wrap('stat', key, err);
    }
  }

  async *listKeys(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<string> {
    for await (const info of this.list(prefix, opts)) yield info.key;
  }

  async *list(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<ObjectInfo> {
    const stream = this.client.listObjectsV2(this.bucket, this.prefix + prefix, true);
    try {
      for await (const item of stream as AsyncIterable<{ name?: string; size: number }>) {
        opts.signal.throwIfAborted();
        if (item.name === undefined) continue;
        yield { key: item.name.slice(this.prefix.length), size: item.size };
      }
    } catch (err) {
      if (opts.signal.aborted) throw opts.signal.reason;
      throw this.wrap('list', prefix, err);
    } finally {
      stream.destroy();
    }
  }

  async remove(key: string, _opts: { signal: AbortSignal }): Promise<void> {
    try {
      await this.client.removeObject(this.bucket, this.key(key));
    } catch (err) {
      if (isNotFound(err)) return;
      throw this.wrap('remove', key, err, DELETE_DENIED);
    }
  }

  async *listUploads(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<UploadInfo> {
    const full = this.prefix + prefix;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      opts.signal.throwIfAborted();
      let page: UploadsPage;
      let offsetMs: number;
      try {
        ({ page, offsetMs } = await this.uploadsPage(full, keyMarker, uploadIdMarker, opts.signal));
      } catch (err) {
        if (opts.signal.aborted) throw opts.signal.reason;
        throw this.wrap('list unfinished uploads', prefix, err, UPLOADS_DENIED);
      }
      for (const upload of page.uploads) {
        if (!upload.key.startsWith(full)) continue;
        yield {
          key: upload.key.slice(this.prefix.length),
          uploadId: upload.uploadId,
          initiated: new Date(upload.initiated.getTime() + offsetMs),
        };
      }
      if (!page.isTruncated) return;
      const next = { key: page.nextKeyMarker, id: page.nextUploadIdMarker };
      // A truncated page naming no next marker, or the one it was asked from, would be asked for again forever.
      if (next.key === undefined || (next.key === keyMarker && next.id === uploadIdMarker)) {
        throw new BackupError(
          'ERR_TARGET',
          `list unfinished uploads ${prefix} in ${this.name}: a truncated page names no next marker, or the same one again; check the target`,
        );
      }
      keyMarker = next.key;
      uploadIdMarker = next.id;
    }
  }

  /**
   * One ListMultipartUploads page, and what to add to its times to make them ours. The answer's
   * Date (the target's clock, in whole seconds rounded down) was stamped before it arrived here, so
   * the target's clock minus ours was at least Date minus the arrival: shifting by the arrival minus
   * Date gives a time of ours never earlier than the true one.
   */
  private async uploadsPage(
    prefix: string,
    keyMarker: string | undefined,
    uploadIdMarker: string | undefined,
    signal: AbortSignal,
  ): Promise<{ page: UploadsPage; offsetMs: number }> {
    const query = ['uploads', `prefix=${encodeRfc3986(prefix)}`, `max-uploads=${this.uploadsPageSize}`];
    if (keyMarker !== undefined) query.push(`key-marker=${encodeRfc3986(keyMarker)}`);
    if (uploadIdMarker !== undefined) query.push(`upload-id-marker=${encodeRfc3986(uploadIdMarker)}`);
    const res = await requestSignal.run(signal, () =>
      this.client.makeRequestAsync({ method: 'GET', bucketName: this.bucket, query: query.join('&') }),
    );
    const arrived = Date.now();
    const date = Date.parse(res.headers.date ?? '');
    const offsetMs = Number.isNaN(date) ? MAX_CLOCK_SKEW_MS : arrived - date;
    return { page: await parseUploadsPage(await readText(res)), offsetMs };
  }

  async abortUpload(upload: UploadInfo, opts: { signal: AbortSignal }): Promise<void> {
    opts.signal.throwIfAborted();
    try {
      // The key as listed, not checked as one to store: a leftover is dropped whatever its name.
      await requestSignal.run(opts.signal, () =>
        this.client.abortMultipartUpload(this.bucket, this.prefix + upload.key, upload.uploadId),
      );
    } catch (err) {
      if (opts.signal.aborted) throw opts.signal.reason;
      if ((err as { code?: unknown }).code === 'NoSuchUpload') return;
      throw this.wrap('abort unfinished upload of', upload.key, err, UPLOADS_DENIED);
    }
  }

  /** Every put is durable once it returns: nothing to take over. */
  adopt(_key: string, _opts: { signal: AbortSignal }): Promise<void> {
    return Promise.resolve();
  }

  private key(key: string): string {
    return this.prefix + checkKey(key);
  }

  /** ERR_TARGET naming the call, the key, the S3 code and the fix; `denied` replaces the fix for AccessDenied. */
  private wrap(op: string, key: string, err: unknown, denied?: string): BackupError {
    // The project client's error repeats only the request and the code; its own cause goes on.
    const cause = err instanceof S3Error ? err.cause : err;
    const options = cause === undefined ? {} : { cause };
    const timedOut =
      err instanceof TargetTimeout ||
      (err instanceof S3Error && err.status === 0 && err.s3Code === 'RequestTimeout');
    if (timedOut) {
      return new BackupError(
        'ERR_TARGET',
        `${op} ${key} in ${this.name}: nothing sent or received for ${this.timeoutMs / 1000} s; check target.endpoint, or raise target.timeoutMs`,
        options,
      );
    }
    const code =
      err instanceof S3Error ? err.s3Code : ((err as { code?: string }).code ?? (err as Error).message);
    const fix = ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTFOUND', 'ETIMEDOUT', 'EHOSTUNREACH'].includes(
      code,
    )
      ? 'check target.endpoint'
      : code === 'AccessDenied' && denied !== undefined
        ? denied
        : code === 'InvalidAccessKeyId' || code === 'SignatureDoesNotMatch' || code === 'AccessDenied'
          ? 'check target.accessKey and target.secretKey'
          : code === 'NoSuchBucket'
            ? `create bucket ${this.bucket} or fix target.bucket`
            : 'check the target';
    return new BackupError('ERR_TARGET', `${op} ${key} in ${this.name}: ${code}; ${fix}`, options);
  }
}

/**
 * minio's transport, with a request that fails (TargetTimeout) once its socket has sent and received
 * nothing for `timeoutMs`: without it, a target that stops taking an upload holds the run forever,
 * since the gateway only waits on a reader slower than itself. A body whose reader is the slow side
 * (its socket paused with bytes unread) only waits again: a backup reads the previous index only as
 * fast as its listing moves. A body the gateway stopped feeding is the gateway's to time out, and
 * its timer started first.
 */
function idleTimeoutTransport(base: typeof http | typeof https, timeoutMs: number): Transport {
  const request = (options: http.RequestOptions, callback?: (res: http.IncomingMessage) => void) => {
    const req = base.request(options, callback);
    let answer: http.IncomingMessage | undefined;
    req.once('response', (res: http.IncomingMessage) => {
      answer = res;
    });
    // A call's request stops with its run, not after it reported its abort.
    const signal = requestSignal.getStore();
    if (signal) {
      const onAbort = (): void => {
        answer?.destroy(signal.reason as Error);
        req.destroy(signal.reason as Error);
      };
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        req.once('close', () => {
          signal.removeEventListener('abort', onAbort);
        });
      }
    }
    req.on('socket', (socket) => {
      // node:http passes on only a socket's first timeout (req.setTimeout): listen for each one.
      const onTimeout = (): void => {
        if (socket.isPaused()) return;
        const err = new TargetTimeout(`nothing sent or received for ${timeoutMs / 1000} s`);
        // The body's reader sees this error, not node:http's "aborted".
        answer?.destroy(err);
        req.destroy(err);
      };
      socket.setTimeout(timeoutMs);
      socket.on('timeout', onTimeout);
      req.once('close', () => {
        socket.off('timeout', onTimeout);
      });
    });
    return req;
  };
  // minio calls only request(options, callback), not the overloads taking a URL.
  return { request } as Transport;
}

/** The fix for an AccessDenied on a delete: the keys read and write, a policy leaves deletes out. */
const DELETE_DENIED = 'allow s3:DeleteObject on the target bucket for target.accessKey';

/** The fix for an AccessDenied on the uploads calls: the keys work, a policy leaves these out. */
const UPLOADS_DENIED =
  'allow s3:ListBucketMultipartUploads and s3:AbortMultipartUpload on the target bucket for target.accessKey';

function isNotFound(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return (
    (err instanceof MinioS3Error || typeof code === 'string') && (code === 'NoSuchKey' || code === 'NotFound')
  );
}
