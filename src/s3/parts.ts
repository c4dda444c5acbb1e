// How a multipart upload cuts its body: part lengths, and readers that hand out the body's bytes
// part by part, streamed when the length is known, gathered a part at a time when it is not.
import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';

/** The part lengths of a `size`-byte body in parts of `partSize` (one part for an empty body). */
export function partLengths(size: number, partSize: number): number[] {
  const lengths: number[] = [];
  for (let offset = 0; offset < size; offset += partSize) lengths.push(Math.min(partSize, size - offset));
  return lengths.length > 0 ? lengths : [0];
}

/**
 * The ETag S3 gives a multipart upload of `body` in parts of `partSize` bytes: the md5 of the parts'
 * md5s, then `-<parts>`. Reads the body through, a buffer at a time.
 */
export async function multipartEtag(body: AsyncIterable<Buffer>, partSize: number): Promise<string> {
  const digests: Buffer[] = [];
  let part: Hash = createHash('md5');
  let left = partSize;
  for await (const chunk of body) {
    let at = 0;
    while (chunk.length - at >= left) {
      part.update(chunk.subarray(at, at + left));
      digests.push(part.digest());
      at += left;
      part = createHash('md5');
      left = partSize;
    }
    part.update(chunk.subarray(at));
    left -= chunk.length - at;
  }
  if (left < partSize || digests.length === 0) digests.push(part.digest());
  return `${createHash('md5').update(Buffer.concat(digests)).digest('hex')}-${digests.length}`;
}

/** The most parts a multipart upload may have in S3. */
export const MAX_PARTS = 10_000;

/**
 * Part sizes for a body of unknown length: `partSize`, growing by `partSize` every 1,000 parts, so
 * MAX_PARTS parts hold 55,000 × partSize (268 GiB at 5 MiB) and only a body that large gathers a
 * part ten times the size.
 */
export function growingPartSize(partSize: number): (index: number) => number {
  return (index) => partSize * (1 + Math.floor(index / 1000));
}

/** A part size of at least `partSize` that cuts `size` bytes into at most MAX_PARTS parts. */
export function fittingPartSize(size: number, partSize: number): number {
  return Math.max(partSize, Math.ceil(size / MAX_PARTS));
}

/**
 * Hands out a body of announced length as consecutive part streams, driven by the body's own
 * `data` events (no promise per buffer), each buffer shown to `observe` as it is handed out. The
 * part that reaches the announced length ends only once the body has ended with nothing more, so
 * a request sending it never completes with a body of any other length.
 */
export class BodyParts {
  private readonly body: Readable;
  private readonly size: number;
  private readonly observe: ((chunk: Buffer) => void) | undefined;
  /** Bytes handed out so far. */
  private read = 0;
  /** Bytes of the body beyond the announced length. */
  private extra = 0;
  /** Bytes read from the body beyond the current part, for the next one. */
  private rest: Buffer | undefined;
  /** The part being handed out, and how many bytes it still takes. */
  private current: Readable | undefined;
  private remaining = 0;
  private ended = false;
  /** Why reading the body failed, once it has: only the body's own failures, never a part's reader's. */
  failure: Error | undefined;

  constructor(body: Readable, size: number, observe?: (chunk: Buffer) => void) {
    this.body = body;
    this.size = size;
    this.observe = observe;
    body.pause();
    body.on('data', (chunk: Buffer) => {
      this.take(chunk);
    });
    body.once('end', () => {
      this.ended = true;
      this.settle();
    });
    body.once('error', (err: Error) => {
      this.fail(err);
    });
  }

  /** A stream of the body's next `length` bytes. */
  next(length: number): Readable {
    const part: Readable = new Readable({
      read: () => {
        if (this.current === part) this.body.resume();
      },
      destroy: (err, callback) => {
        // A reader that gave up (a failed request) leaves the body paused, not failed.
        if (this.current === part) {
          this.current = undefined;
          this.body.pause();
        }
        callback(err);
      },
    });
    this.current = part;
    this.remaining = length;
    if (this.failure !== undefined) {
      part.destroy(this.failure);
      return part;
    }
    const rest = this.rest;
    this.rest = undefined;
    if (rest !== undefined) this.take(rest);
    this.settle();
    return part;
  }

  /** A buffer of the body: into the current part, kept for the next, or counted as extra. */
  private take(chunk: Buffer): void {
    const part = this.current;
    if (this.read === this.size) {
      this.extra += chunk.length;
      return;
    }
    if (part === undefined || this.remaining === 0) {
      this.rest = this.rest === undefined ? chunk : Buffer.concat([this.rest, chunk]);
      this.body.pause();
      return;
    }
    let piece = chunk;
    if (piece.length > this.remaining) {
      const beyond = piece.subarray(this.remaining);
      piece = piece.subarray(0, this.remaining);
      // Bytes beyond the last part are beyond the body's announced length.
      if (this.read + piece.length === this.size) this.extra += beyond.length;
      else this.rest = beyond;
    }
    this.remaining -= piece.length;
    this.read += piece.length;
    this.observe?.(piece);
    const more = part.push(piece);
    if (this.remaining === 0 && this.read < this.size) {
      this.current = undefined;
      this.body.pause();
      part.push(null);
    } else if (this.remaining === 0) {
      // The last part: the body is read to its end before the part ends.
      this.body.resume();
    } else if (!more) this.body.pause();
  }

  /** Ends the current part, or fails it, once the body has ended. */
  private settle(): void {
    const part = this.current;
    if (part === undefined || this.failure !== undefined) return;
    if (this.read === this.size && this.remaining === 0) {
      if (!this.ended) {
        this.body.resume();
        return;
      }
      this.current = undefined;
      if (this.extra > 0) {
        this.fail(new Error(`body is ${this.extra} bytes longer than ${this.size} bytes`), part);
      } else part.push(null);
    } else if (this.ended) {
      this.fail(new Error(`body ended after ${this.read} of ${this.size} bytes`), part);
    }
  }

  private fail(err: Error, part = this.current): void {
    this.failure ??= err;
    this.current = undefined;
    part?.destroy(this.failure);
  }
}

/**
 * Re-cuts a stream into buffers, the nth (from 0) of `sizeOf(n)` bytes; the last may be shorter.
 * Each buffer is gathered in memory whole; `observe` is shown the stream's buffers as they come.
 */
export async function* chunked(
  body: Readable,
  sizeOf: (index: number) => number,
  observe?: (chunk: Buffer) => void,
): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let length = 0;
  let index = 0;
  let size = sizeOf(index);
  for await (const chunk of body) {
    let buf = chunk as Buffer;
    observe?.(buf);
    while (length + buf.length >= size) {
      const take = size - length;
      pending.push(buf.subarray(0, take));
      yield Buffer.concat(pending);
      buf = buf.subarray(take);
      pending = [];
      length = 0;
      size = sizeOf(++index);
    }
    if (buf.length > 0) {
      pending.push(buf);
      length += buf.length;
    }
  }
  if (length > 0) yield Buffer.concat(pending);
}
