// A target in an S3 bucket under a prefix (SigV4, any endpoint and region), through the project's
// S3 client. Puts stream in signed chunks over plain HTTP (over https, TLS guards them); artifacts
// larger than a part or of unknown size go up as multipart uploads in parts of partSizeMiB. The
// uploads a dead run left unfinished are listed and dropped with ListMultipartUploads and
// AbortMultipartUpload.
import type { Readable } from 'node:stream';
import { BackupError } from '../errors.js';
import { attemptsNote, S3Client, S3Error, StuckUploadsListing } from '../s3/client.js';
import { fittingPartSize } from '../s3/parts.js';
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

/** S3-backed Target. */
export class S3Target implements Target {
  readonly name: string;
  /** An S3 PUT is durable once it returns: deferSync changes nothing. */
  readonly defersSync = false;
  /** A multipart upload whose put was killed stays until it is aborted. */
  readonly leavesUploads = true;
  private readonly client: S3Client;
  private readonly timeoutMs: number;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly uploadsPageSize: number;
  private readonly partSize: number;
  /** Set once the bucket is known to exist (see stat). */
  private bucketFound = false;

  constructor(options: S3TargetOptions) {
    this.bucket = options.bucket;
    this.prefix =
      options.prefix === '' || options.prefix.endsWith('/') ? options.prefix : `${options.prefix}/`;
    this.name = `s3://${options.bucket}/${this.prefix}`.replace(/\/$/, '');
    this.uploadsPageSize = options.uploadsPageSize ?? 1000;
    this.partSize = options.partSizeMiB * 1024 * 1024;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.client = new S3Client({
      endpoint: options.endpoint,
      accessKey: options.accessKey.reveal(),
      secretKey: options.secretKey.reveal(),
      signatureVersion: 'v4',
      // Over plain HTTP only the chunk signatures make the target refuse a body damaged on the way.
      // Over https TLS does that already, and signing chunks too would hash every byte a second time
      // (the repository hashes it for its own sha256): bodies go as UNSIGNED-PAYLOAD there, as the
      // AWS SDK for Java's unsigned-payload signer sends them over https only.
      signChunks: new URL(options.endpoint).protocol === 'http:',
      region: options.region,
      timeoutMs: this.timeoutMs,
      // Transfers are as many as the run's concurrency (at most 64): none waits for a connection.
      maxSockets: 64,
    });
  }

  async put(key: string, body: Readable, opts: PutOptions): Promise<void> {
    const name = this.key(key);
    // The client shows each buffer of the body to `observe` as it hands it to a request.
    const observe = opts.observe === undefined ? {} : { observe: opts.observe };
    try {
      if (opts.size !== undefined && opts.size <= this.partSize) {
        await this.client.putObject(this.bucket, name, body, {
          signal: opts.signal,
          size: opts.size,
          ...observe,
        });
      } else {
        await this.client.putObjectMultipart(this.bucket, name, body, {
          signal: opts.signal,
          ...observe,
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
    let got: Awaited<ReturnType<S3Client['getObject']>>;
    try {
      got = await this.client.getObject(this.bucket, this.key(key), opts);
    } catch (err) {
      if (opts.signal.aborted) throw opts.signal.reason;
      throw this.wrap('get', key, err);
    }
    if (got === undefined) throw new BackupError('ERR_NOT_FOUND', `${key} not found in ${this.name}`);
    const stream = got.body;
    // The body's reader sees the run's own reason, not node:http's "aborted".
    const onAbort = (): void => {
      stream.destroy(opts.signal.reason as Error);
    };
    opts.signal.addEventListener('abort', onAbort, { once: true });
    stream.once('close', () => {
      opts.signal.removeEventListener('abort', onAbort);
    });
    return stream;
  }

  async stat(key: string, opts: { signal: AbortSignal }): Promise<ObjectInfo | undefined> {
    try {
      const head = await this.client.headObject(this.bucket, this.key(key), opts);
      if (head !== undefined) {
        this.bucketFound = true;
        return { key, size: head.size };
      }
      // A HEAD's 404 has no body to say whether the key or the bucket is missing: the first one
      // asks about the bucket, so that a missing bucket is named as such, not taken for a new key.
      if (!this.bucketFound) {
        if (!(await this.client.bucketExists(this.bucket, opts)))
          throw new S3Error(404, 'NoSuchBucket', `HEAD /${this.bucket}: no such bucket`);
        this.bucketFound = true;
      }
      return undefined;
    } catch (err) {
      if (opts.signal.aborted) throw opts.signal.reason;
      throw this.wrap('stat', key, err);
    }
  }

  async *listKeys(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<string> {
    for await (const info of this.list(prefix, opts)) yield info.key;
  }

  async *list(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<ObjectInfo> {
    try {
      const listing = this.client.listObjects(this.bucket, {
        signal: opts.signal,
        prefix: this.prefix + prefix,
        listVersion: 2,
      });
      for await (const item of listing) yield { key: item.key.slice(this.prefix.length), size: item.size };
    } catch (err) {
      if (opts.signal.aborted) throw opts.signal.reason;
      throw this.wrap('list', prefix, err);
    }
  }

  async remove(key: string, opts: { signal: AbortSignal }): Promise<void> {
    try {
      await this.client.deleteObject(this.bucket, this.key(key), opts);
    } catch (err) {
      if (opts.signal.aborted) throw opts.signal.reason;
      if (err instanceof S3Error && err.s3Code === 'NoSuchKey') return;
      throw this.wrap('remove', key, err, DELETE_DENIED);
    }
  }

  async *listUploads(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<UploadInfo> {
    const full = this.prefix + prefix;
    const pages = this.client.listUploads(this.bucket, {
      signal: opts.signal,
      prefix: full,
      maxUploads: this.uploadsPageSize,
    });
    for (;;) {
      let answer;
      try {
        const next = await pages.next();
        if (next.done) return;
        answer = next.value;
      } catch (err) {
        if (opts.signal.aborted) throw opts.signal.reason;
        if (err instanceof StuckUploadsListing) {
          throw new BackupError(
            'ERR_TARGET',
            `list unfinished uploads ${prefix} in ${this.name}: ${err.message}; check the target`,
          );
        }
        throw this.wrap('list unfinished uploads', prefix, err, UPLOADS_DENIED);
      }
      // The answer's Date (the target's clock, in whole seconds rounded down) was stamped before it
      // arrived here, so the target's clock minus ours was at least Date minus the arrival: shifting
      // by the arrival minus Date gives a time of ours never earlier than the true one.
      const date = Date.parse(answer.date ?? '');
      const offsetMs = Number.isNaN(date) ? MAX_CLOCK_SKEW_MS : answer.arrived - date;
      for (const upload of answer.page.uploads) {
        if (!upload.key.startsWith(full)) continue;
        yield {
          key: upload.key.slice(this.prefix.length),
          uploadId: upload.uploadId,
          initiated: new Date(upload.initiated.getTime() + offsetMs),
        };
      }
    }
  }

  async abortUpload(upload: UploadInfo, opts: { signal: AbortSignal }): Promise<void> {
    opts.signal.throwIfAborted();
    try {
      // The key as listed, not checked as one to store: a leftover is dropped whatever its name.
      await this.client.abortUpload(this.bucket, this.prefix + upload.key, upload.uploadId, opts);
    } catch (err) {
      if (opts.signal.aborted) throw opts.signal.reason;
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
    if (err instanceof S3Error && err.status === 0 && err.s3Code === 'RequestTimeout') {
      return new BackupError(
        'ERR_TARGET',
        `${op} ${key} in ${this.name}: nothing sent or received for ${this.timeoutMs / 1000} s; check target.endpoint, or raise target.timeoutMs`,
        options,
      );
    }
    const code =
      err instanceof S3Error ? err.s3Code : ((err as { code?: string }).code ?? (err as Error).message);
    return new BackupError(
      'ERR_TARGET',
      `${op} ${key} in ${this.name}: ${code}${err instanceof S3Error ? attemptsNote(err.attempts) : ''}; ${this.fix(code, denied)}`,
      options,
    );
  }

  /** What to do about an S3 or network error code; `denied` replaces the fix for AccessDenied. */
  private fix(code: string, denied: string | undefined): string {
    if (['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTFOUND', 'ETIMEDOUT', 'EHOSTUNREACH'].includes(code))
      return 'check target.endpoint';
    const tls = TLS_FIXES.get(code);
    if (tls !== undefined) return tls;
    if (code === 'AccessDenied' && denied !== undefined) return denied;
    if (code === 'InvalidAccessKeyId' || code === 'SignatureDoesNotMatch' || code === 'AccessDenied')
      return 'check target.accessKey and target.secretKey';
    if (code === 'NoSuchBucket') return `create bucket ${this.bucket} or fix target.bucket`;
    return 'check the target';
  }
}

/** The fix for a target certificate that no trusted authority signed. */
const UNTRUSTED =
  "the target's certificate is not signed by a trusted authority: set NODE_EXTRA_CA_CERTS to a PEM file of its CA";

/** The fix for each way Node's TLS refuses the target's certificate, by its error code. */
const TLS_FIXES: ReadonlyMap<string, string> = new Map([
  ['DEPTH_ZERO_SELF_SIGNED_CERT', UNTRUSTED],
  ['SELF_SIGNED_CERT_IN_CHAIN', UNTRUSTED],
  ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', UNTRUSTED],
  ['UNABLE_TO_GET_ISSUER_CERT', UNTRUSTED],
  ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', UNTRUSTED],
  ['CERT_HAS_EXPIRED', "the target's certificate has expired: renew it, or check this host's clock"],
  ['CERT_NOT_YET_VALID', "the target's certificate is not valid yet: check this host's clock"],
  [
    'ERR_TLS_CERT_ALTNAME_INVALID',
    "the target's certificate does not name the host in target.endpoint: fix target.endpoint",
  ],
]);

/** The fix for an AccessDenied on a delete: the keys read and write, a policy leaves deletes out. */
const DELETE_DENIED = 'allow s3:DeleteObject on the target bucket for target.accessKey';

/** The fix for an AccessDenied on the uploads calls: the keys work, a policy leaves these out. */
const UPLOADS_DENIED =
  'allow s3:ListBucketMultipartUploads and s3:AbortMultipartUpload on the target bucket for target.accessKey';
