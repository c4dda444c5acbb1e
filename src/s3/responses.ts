// Reading the gateway's answers: XML bodies, errors, object heads, ETags.
import type http from 'node:http';
import type { Readable } from 'node:stream';
import type { XMLParser } from 'fast-xml-parser';
import type { ObjectHead } from './client.js';

/** An S3 error answer (status > 0) or a connection failure (status 0, s3Code = the errno code). */
export class S3Error extends Error {
  override name = 'S3Error';
  readonly status: number;
  readonly s3Code: string;
  /** How many times the request was sent (see retry.ts). */
  attempts = 1;
  constructor(status: number, s3Code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.status = status;
    this.s3Code = s3Code;
  }
}

/** Codes of a request that never reached the gateway, or got no answer from it in time. */
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'RequestTimeout',
]);

/** Whether err says the gateway is not there or not answering at all (not one request gone wrong). */
export function isUnreachable(err: unknown): err is S3Error {
  return err instanceof S3Error && err.status === 0 && UNREACHABLE.has(err.s3Code);
}

/** Whether a system error code (ECONNREFUSED, ENOTFOUND, ...) says a server cannot be reached. */
export function isUnreachableCode(code: unknown): boolean {
  return typeof code === 'string' && code !== 'RequestTimeout' && UNREACHABLE.has(code);
}

let xmlParser: XMLParser | undefined;

/**
 * Parses an S3 XML response. fast-xml-parser costs about 28 ms to load, so it is loaded on the first
 * response that has XML to read: runs that never talk to S3 (a volume or database run) skip it.
 */
export async function parseXml(text: string): Promise<unknown> {
  if (xmlParser === undefined) {
    const { XMLParser } = await import('fast-xml-parser');
    xmlParser = new XMLParser({
      ignoreAttributes: true,
      parseTagValue: false,
      trimValues: false,
      isArray: (name) => name === 'Contents' || name === 'Bucket' || name === 'Upload',
    });
  }
  return xmlParser.parse(text) as unknown;
}

export async function errorFromResponse(status: number, body: string, what: string): Promise<S3Error> {
  const parsed = body ? ((await parseXml(body)) as { Error?: Record<string, string> }) : {};
  const fallback: Record<number, string> = {
    403: 'AccessDenied',
    404: 'NotFound',
    411: 'MissingContentLength',
  };
  const code = parsed.Error?.['Code'] ?? fallback[status] ?? `HTTP${status}`;
  return new S3Error(status, code, `${what}: ${status} ${code}`);
}

/** What an answer's headers (names lowercased) say about its object. */
export function headFrom(headers: http.IncomingHttpHeaders): ObjectHead {
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith('x-amz-meta-') && typeof value === 'string') metadata[name.slice(11)] = value;
  }
  return {
    size: Number(headers['content-length'] ?? 0),
    etag: unquote(headers.etag ?? ''),
    lastModified: new Date(String(headers['last-modified'] ?? 0)).toISOString(),
    contentType: headers['content-type'],
    metadata,
  };
}

export function unquote(etag: string): string {
  return etag.replace(/^"|"$/g, '').replace(/^&quot;|&quot;$/g, '');
}

export async function readText(res: Readable, limit = 64 * 1024 * 1024): Promise<string> {
  return (await readBytes(res, limit)).toString('utf8');
}

/** The body's bytes, up to limit (the rest is not read). */
export async function readBytes(res: Readable, limit = 64 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res) {
    const buf = chunk as Buffer;
    total += buf.length;
    if (total > limit) break;
    chunks.push(buf);
  }
  return Buffer.concat(chunks);
}
