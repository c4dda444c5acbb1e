// How a multipart upload cuts its body: part lengths, and readers that hand out the body's bytes
// part by part, streamed when the length is known, gathered a part at a time when it is not.
import type { Readable } from 'node:stream';

/** The part lengths of a `size`-byte body in parts of `partSize` (one part for an empty body). */
export function partLengths(size: number, partSize: number): number[] {
  const lengths: number[] = [];
  for (let offset = 0; offset < size; offset += partSize) lengths.push(Math.min(partSize, size - offset));
  return lengths.length > 0 ? lengths : [0];
}

/** Reads a body of announced length as consecutive parts; a body of any other length fails. */
export class PartReader {
  private readonly iterator: AsyncIterator<unknown>;
  private readonly size: number;
  private rest: Buffer | undefined;
  private read = 0;
  /** Why reading the body failed, once it has. */
  failure: Error | undefined;

  constructor(body: Readable, size: number) {
    this.iterator = body[Symbol.asyncIterator]();
    this.size = size;
  }

  /** Yields the next `length` bytes of the body. */
  async *next(length: number): AsyncGenerator<Buffer> {
    try {
      yield* this.take(length);
    } catch (err) {
      this.failure ??= toErrorObject(err);
      throw err;
    }
  }

  private async *take(length: number): AsyncGenerator<Buffer> {
    let remaining = length;
    while (remaining > 0) {
      let chunk = this.rest;
      this.rest = undefined;
      if (chunk === undefined) {
        const step = await this.iterator.next();
        if (step.done === true) {
          throw new Error(`body ended after ${this.read} of ${this.size} bytes`);
        }
        chunk = step.value as Buffer;
      }
      if (chunk.length > remaining) {
        this.rest = chunk.subarray(remaining);
        chunk = chunk.subarray(0, remaining);
      }
      remaining -= chunk.length;
      this.read += chunk.length;
      yield chunk;
    }
  }

  /** Reads the body to its end, failing if bytes are left beyond the announced length. */
  async end(): Promise<void> {
    let extra = this.rest?.length ?? 0;
    try {
      for (let step = await this.iterator.next(); step.done !== true; step = await this.iterator.next())
        extra += (step.value as Buffer).length;
    } catch (err) {
      this.failure ??= toErrorObject(err);
      throw err;
    }
    if (extra > 0) {
      this.failure = new Error(`body is ${extra} bytes longer than ${this.size} bytes`);
      throw this.failure;
    }
  }
}

function toErrorObject(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** Re-cuts a stream into buffers of exactly `size` bytes (the last may be shorter). */
export async function* chunked(body: Readable, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let length = 0;
  for await (const chunk of body) {
    let buf = chunk as Buffer;
    while (length + buf.length >= size) {
      const take = size - length;
      pending.push(buf.subarray(0, take));
      yield Buffer.concat(pending);
      buf = buf.subarray(take);
      pending = [];
      length = 0;
    }
    if (buf.length > 0) {
      pending.push(buf);
      length += buf.length;
    }
  }
  if (length > 0) yield Buffer.concat(pending);
}
