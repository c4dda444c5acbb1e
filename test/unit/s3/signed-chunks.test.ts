import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { V4Signature } from '../../../src/s3/sign-v4.js';
import { ChunkSigner, signedChunksLength } from '../../../src/s3/signed-chunks.js';

const hmac = (key: Buffer | string, data: string): Buffer => createHmac('sha256', key).update(data).digest();

/** The seed of the chunked PUT example in AWS's "Transferring Payload in Multiple Chunks" page. */
const AWS_EXAMPLE: V4Signature = {
  authorization: '',
  signature: '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9',
  amzDate: '20130524T000000Z',
  scope: '20130524/us-east-1/s3/aws4_request',
  key: hmac(
    hmac(hmac(hmac('AWS4wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', '20130524'), 'us-east-1'), 's3'),
    'aws4_request',
  ),
};

/** What the signer sends for `body` written in pieces of `piece` bytes. */
async function signed(body: Buffer, piece: number, chunkSize?: number): Promise<Buffer> {
  const signer = new ChunkSigner(AWS_EXAMPLE, chunkSize);
  const out: Buffer[] = [];
  signer.on('data', (chunk: Buffer) => out.push(chunk));
  const ended = new Promise((resolve) => signer.once('end', resolve));
  for (let offset = 0; offset < body.length; offset += piece)
    signer.write(body.subarray(offset, offset + piece));
  signer.end();
  await ended;
  return Buffer.concat(out);
}

/** The chunks of a signed body: each `<hex size>;chunk-signature=<sig>\r\n<data>\r\n`. */
function frames(sent: Buffer): { size: number; signature: string }[] {
  const found: { size: number; signature: string }[] = [];
  let offset = 0;
  while (offset < sent.length) {
    const end = sent.indexOf('\r\n', offset);
    const header = /^([0-9a-f]+);chunk-signature=([0-9a-f]{64})$/.exec(sent.toString('latin1', offset, end));
    if (header === null) throw new Error(`no chunk header at ${offset}`);
    const size = Number.parseInt(header[1] ?? '', 16);
    found.push({ size, signature: header[2] ?? '' });
    offset = end + 2 + size;
    expect(sent.toString('latin1', offset, offset + 2)).toBe('\r\n');
    offset += 2;
  }
  return found;
}

describe('ChunkSigner', () => {
  it('signs the chunks of AWS’s example as its page does', async () => {
    const sent = await signed(Buffer.alloc(66_560, 'a'), 66_560);
    expect(sent.length).toBe(66_824);
    expect(frames(sent)).toEqual([
      { size: 65_536, signature: 'ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648' },
      { size: 1024, signature: '0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497' },
      { size: 0, signature: 'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9' },
    ]);
  });

  it('sends the same bytes however its input is cut, as long as signedChunksLength says', async () => {
    const body = Buffer.from(Array.from({ length: 3 * 65_536 + 5 }, (_, i) => i % 251));
    for (const size of [0, 1, 8191, 65_535, 65_536, 65_537, 3 * 65_536, body.length]) {
      const whole = await signed(body.subarray(0, size), Math.max(1, size));
      expect(whole.length).toBe(signedChunksLength(size));
      expect((await signed(body.subarray(0, size), 1000)).equals(whole)).toBe(true);
    }
    expect(frames(await signed(body, 7000)).map((f) => f.size)).toEqual([65_536, 65_536, 65_536, 5, 0]);
    expect((await signed(body, 7000, 8192)).length).toBe(signedChunksLength(body.length, 8192));
  });
});
