// AWS signature version 4 for S3 requests, header form, with a signed or UNSIGNED-PAYLOAD body hash.
import { createHash, createHmac } from 'node:crypto';

/** sha256 of the empty body, the payload hash of every request without a body. */
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** RFC 3986 encoding as SigV4 wants it; '/' is kept when `keepSlash`. */
export function encodeRfc3986(value: string, keepSlash = false): string {
  const encoded = encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return keepSlash ? encoded.replace(/%2F/g, '/') : encoded;
}

/** What the V4 signature covers. `path` is the encoded path as sent. */
export interface V4Request {
  method: string;
  path: string;
  query: URLSearchParams;
  /** Must already hold host, x-amz-date and x-amz-content-sha256. */
  headers: Readonly<Record<string, string>>;
}

const hmac = (key: Buffer | string, data: string): Buffer =>
  createHmac('sha256', key).update(data, 'utf8').digest();

/** What signing keys and credentials a V4 signature needs. */
export interface V4Credentials {
  accessKey: string;
  secretKey: string;
  region: string;
}

/** A request's V4 signature, and what signing a body in chunks after it takes. */
export interface V4Signature {
  /** The `Authorization` header value. */
  authorization: string;
  /** The signature in it: the seed of the first chunk's signature. */
  signature: string;
  /** The request's x-amz-date. */
  amzDate: string;
  /** `day/region/s3/aws4_request`. */
  scope: string;
  /** The key derived for that day and region. */
  key: Buffer;
}

/** Signs the request: host, content-md5 and every x-amz-* header. */
export function signV4(req: V4Request, credentials: V4Credentials): V4Signature {
  const headers = Object.entries(req.headers)
    .map(([name, value]) => [name.toLowerCase(), value.trim()] as const)
    .filter(([name]) => name === 'host' || name.startsWith('x-amz-') || name === 'content-md5')
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const signedHeaders = headers.map(([name]) => name).join(';');
  const query = [...req.query.entries()]
    .map(([k, v]) => [encodeRfc3986(k), encodeRfc3986(v)] as const)
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const amzDate = req.headers['x-amz-date'] ?? '';
  const payloadHash = req.headers['x-amz-content-sha256'] ?? EMPTY_SHA256;
  const canonical = [
    req.method.toUpperCase(),
    req.path,
    query,
    headers.map(([name, value]) => `${name}:${value}\n`).join(''),
    signedHeaders,
    payloadHash,
  ].join('\n');
  const day = amzDate.slice(0, 8);
  const scope = `${day}/${credentials.region}/s3/aws4_request`;
  const toSign = [
    'AWS4-HMAC-SHA256',
    amzDate,
    scope,
    createHash('sha256').update(canonical, 'utf8').digest('hex'),
  ].join('\n');
  const key = hmac(
    hmac(hmac(hmac(`AWS4${credentials.secretKey}`, day), credentials.region), 's3'),
    'aws4_request',
  );
  const signature = createHmac('sha256', key).update(toSign, 'utf8').digest('hex');
  return {
    authorization: `AWS4-HMAC-SHA256 Credential=${credentials.accessKey}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`,
    signature,
    amzDate,
    scope,
    key,
  };
}

/** `20261125T120000Z` from a Date. */
export function amzDate(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}
