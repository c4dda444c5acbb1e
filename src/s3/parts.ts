// How a multipart upload cuts its body: part lengths, and readers that hand out the body's bytes
// part by part, streamed when the length is known, gathered a part at a time when it is not.
import type { Readable } from 'node:stream';

/** The part lengths of a `size`-byte body in parts of `partSize` (one part for an empty body). */
export function partLengths(size: number, partSize: number): number[] {
  const lengths: number[] = [];
  for (let offset = 0; offset < size; offset += partSize) lengths.push(Math.min(partSize, size - offset));
  return lengths.length > 0 ? lengths : [0];
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

/** Reads a body of announced length as consecutive parts; a body of any other length fails. */
export class PartReader {
  private readonly iterator: AsyncIterator<unknown>;
  private readonly size: number;
  private readonly observe: ((chunk: Buffer) => void) | undefined;
  private rest: Buffer | undefined;
  private read = 0;
  /** Why reading the body failed, once it has. */
  failure: Error | undefined;

  /** `observe` is shown each buffer as it is handed out. */
  constructor(body: Readable, size: number, observe?: (chunk: Buffer) => void) {
    this.iterator = body[Symbol.asyncIterator]();
    this.size = size;
    this.observe = observe;
  }

  /**
   * Yields the next `length` bytes of the body. Only the body's own failures are kept as `failure`:
   * not an error a reader of these bytes throws back in (a request that failed).
   */
  async *next(length: number): AsyncGenerator<Buffer> {
    let remaining = length;
    while (remaining > 0) {
      let chunk = this.rest;
      this.rest = undefined;
      if (chunk === undefined) {
        const step = await this.pull();
        if (step.done === true) {
          this.failure = new Error(`body ended after ${this.read} of ${this.size} bytes`);
          throw this.failure;
        }
        chunk = step.value as Buffer;
      }
      if (chunk.length > remaining) {
        this.rest = chunk.subarray(remaining);
        chunk = chunk.subarray(0, remaining);
      }
      remaining -= chunk.length;
      this.read += chunk.length;
      this.observe?.(chunk);
      yield chunk;
    }
  }

  /** Yields the body's remaining bytes, failing before it ends if it is not of the announced length. */
  async *all(): AsyncGenerator<Buffer> {
    yield* this.next(this.size - this.read);
    await this.end();
  }

  /** Reads the body to its end, failing if bytes are left beyond the announced length. */
  async end(): Promise<void> {
    let extra = this.rest?.length ?? 0;
    for (let step = await this.pull(); step.done !== true; step = await this.pull())
      extra += (step.value as Buffer).length;
    if (extra > 0) {
      this.failure = new Error(`body is ${extra} bytes longer than ${this.size} bytes`);
      throw this.failure;
    }
  }

  /** The body's next buffer, its failure kept. */
  private async pull(): Promise<IteratorResult<unknown>> {
    try {
      return await this.iterator.next();
    } catch (err) {
      this.failure ??= toErrorObject(err);
      throw err;
    }
  }
}

function toErrorObject(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
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
