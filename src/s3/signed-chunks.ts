// A V4-signed body sent in signed chunks (x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD):
// each chunk carries the signature of its bytes, chained to the one before it, so the server
// refuses a body damaged on the way while no more than one chunk is held to sign it.
import { createHash, createHmac } from 'node:crypto';
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
 * Yields `source` framed as signed chunks of `chunkSize` bytes (the last shorter), then the empty
 * chunk that ends the body. The source's buffers are passed on as they are, after their chunk's
 * header: no byte is copied.
 */
export async function* signChunks(
  seed: V4Signature,
  source: AsyncIterable<Buffer>,
  chunkSize = SIGNED_CHUNK_SIZE,
): AsyncGenerator<Buffer> {
  let previous = seed.signature;
  let pieces: Buffer[] = [];
  let held = 0;
  /** The held pieces (`length` bytes) as one chunk behind its signed header. */
  const chunk = (length: number): Buffer[] => {
    const hash = createHash('sha256');
    for (const piece of pieces) hash.update(piece);
    const toSign = [
      'AWS4-HMAC-SHA256-PAYLOAD',
      seed.amzDate,
      seed.scope,
      previous,
      EMPTY_SHA256,
      hash.digest('hex'),
    ].join('\n');
    previous = createHmac('sha256', seed.key).update(toSign, 'utf8').digest('hex');
    const framed = [Buffer.from(`${length.toString(16)};chunk-signature=${previous}\r\n`), ...pieces, CRLF];
    pieces = [];
    held = 0;
    return framed;
  };
  for await (const given of source) {
    let rest = given;
    while (held + rest.length >= chunkSize) {
      const take = chunkSize - held;
      pieces.push(rest.subarray(0, take));
      rest = rest.subarray(take);
      yield* chunk(chunkSize);
    }
    if (rest.length > 0) {
      pieces.push(rest);
      held += rest.length;
    }
  }
  if (held > 0) yield* chunk(held);
  yield* chunk(0);
}

const CRLF = Buffer.from('\r\n');
