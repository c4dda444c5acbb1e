// AWS signature version 2 (the only scheme a Ceph hammer radosgw, and so a Deis v1 store-gateway, accepts).
import { createHmac } from 'node:crypto';

/** Query parameters that are part of the signed resource; every other parameter is left out. */
const SUB_RESOURCES = new Set([
  'acl',
  'cors',
  'delete',
  'lifecycle',
  'location',
  'logging',
  'notification',
  'partNumber',
  'policy',
  'requestPayment',
  'restore',
  'tagging',
  'torrent',
  'uploadId',
  'uploads',
  'versionId',
  'versioning',
  'versions',
  'website',
  'response-cache-control',
  'response-content-disposition',
  'response-content-encoding',
  'response-content-language',
  'response-content-type',
  'response-expires',
]);

/** What the V2 signature covers. `path` is the encoded path as sent, `query` the parsed query string. */
export interface V2Request {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: Readonly<Record<string, string>>;
}

/** Builds the string to sign: verb, Content-MD5, Content-Type, Date, x-amz-* headers, resource. */
export function stringToSignV2(req: V2Request): string {
  const lower = new Map<string, string>();
  for (const [name, value] of Object.entries(req.headers)) lower.set(name.toLowerCase(), value);
  const amz = [...lower.entries()]
    .filter(([name]) => name.startsWith('x-amz-'))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, value]) => `${name}:${value.trim()}\n`)
    .join('');
  // With x-amz-date present the Date line stays empty: the amz header carries the time.
  const date = lower.has('x-amz-date') ? '' : (lower.get('date') ?? '');
  const subs = [...req.query.entries()]
    .filter(([name]) => SUB_RESOURCES.has(name))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, value]) => (value === '' ? name : `${name}=${value}`));
  const resource = req.path + (subs.length > 0 ? `?${subs.join('&')}` : '');
  return [
    req.method.toUpperCase(),
    lower.get('content-md5') ?? '',
    lower.get('content-type') ?? '',
    date,
    amz + resource,
  ].join('\n');
}

/** Returns the `Authorization` header value `AWS <accessKey>:<base64 HMAC-SHA1>`. */
export function authorizationV2(req: V2Request, accessKey: string, secretKey: string): string {
  const signature = createHmac('sha1', secretKey).update(stringToSignV2(req), 'utf8').digest('base64');
  return `AWS ${accessKey}:${signature}`;
}
