// A V4-signed body sent in signed chunks (x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD):
// each chunk carries the signature of its bytes, chained to the one before it, so the server
// refuses a body damaged on the way while no more than one chunk is held to sign it.
import { createHash, createHmac } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { EMPTY_SHA256, type V4Signature } from './sign-v4.js';

/** The x-amz-content-sha256 value announcing a body in signed chunks. */
export const STREAMING_PAYLOAD = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD';

/** Bytes of data per chunk but the last: 64 KiB, the least S3 recommends for speed (it allows 8 KiB). */
export const SIGNED_CHUNK_SIZE = 64 * 1024;

/** `;chunk-signature=`, 64 hex digits, CRLF before the data and CRLF after it. */
const FRAMING = ';chunk-signature='.length + 64 + 4;

/** The length on the wire of a `size`-byte body in chunks of `chunkSize`, the empty last chunk included. */
export function signedChunksLength(size: number, chunkSize = SIGNED_CHUNK_SIZE): number {
  const full = Math.floor(size / chunkSize);
  const rest = size % chunkSize;
  const frame = (length: number): number => length.toString(16).length + FRAMING + length;
  return full * frame(chunkSize) + (rest > 0 ? frame(rest) : 0) + frame(0);
}

/**
 * Frames its input as signed chunks of `chunkSize` bytes (the last shorter), then the empty chunk
 * that ends the body. The input's buffers are passed on as they are, after the chunk's header.
 */
export class ChunkSigner extends Transform {
  private readonly seed: V4Signature;
  private readonly chunkSize: number;
  private previous: string;
  private pieces: Buffer[] = [];
  private held = 0;

  constructor(seed: V4Signature, chunkSize = SIGNED_CHUNK_SIZE) {
    super();
    this.seed = seed;
    this.chunkSize = chunkSize;
    this.previous = seed.signature;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let rest = chunk;
    while (this.held + rest.length >= this.chunkSize) {
      const take = this.chunkSize - this.held;
      this.pieces.push(rest.subarray(0, take));
      rest = rest.subarray(take);
      this.emitChunk(this.chunkSize);
    }
    if (rest.length > 0) {
      this.pieces.push(rest);
      this.held += rest.length;
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (this.held > 0) this.emitChunk(this.held);
    this.emitChunk(0);
    callback();
  }

  /** Sends the held pieces (`length` bytes) as one chunk behind its signed header. */
  private emitChunk(length: number): void {
    const hash = createHash('sha256');
    for (const piece of this.pieces) hash.update(piece);
    const toSign = [
      'AWS4-HMAC-SHA256-PAYLOAD',
      this.seed.amzDate,
      this.seed.scope,
      this.previous,
      EMPTY_SHA256,
      hash.digest('hex'),
    ].join('\n');
    this.previous = createHmac('sha256', this.seed.key).update(toSign, 'utf8').digest('hex');
    this.push(`${length.toString(16)};chunk-signature=${this.previous}\r\n`);
    for (const piece of this.pieces) this.push(piece);
    this.push('\r\n');
    this.pieces = [];
    this.held = 0;
  }
}
