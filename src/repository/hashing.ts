// A pass-through stream that hashes (sha256) and counts what flows through it.
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/** Pass-through Transform; read `bytes` and `digest()` after the stream has ended. */
export class HashingStream extends Transform {
  bytes = 0;
  private readonly hash: Hash = createHash('sha256');

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    callback(null, chunk);
  }

  /** Hex sha256 of everything that passed. Call once, after the end. */
  digest(): string {
    return this.hash.digest('hex');
  }
}
