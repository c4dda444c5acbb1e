// Reads one page of a ListMultipartUploads answer: the unfinished multipart uploads under a prefix,
// and the key and upload id the next page starts after.
import { parseXml } from './responses.js';

/** One unfinished multipart upload as the listing names it; `initiated` is by the server's clock. */
export interface ListedUpload {
  key: string;
  uploadId: string;
  initiated: Date;
}

/** One page of uploads, in key then upload id order, and where the next page starts. */
export interface UploadsPage {
  uploads: ListedUpload[];
  isTruncated: boolean;
  nextKeyMarker: string | undefined;
  nextUploadIdMarker: string | undefined;
}

/** Thrown for a document that is not a well-formed ListMultipartUploads page. */
export class MalformedUploads extends Error {}

/**
 * Parses a ListMultipartUploadsResult page. Throws MalformedUploads when it is not one, or when an
 * upload lacks its key, id or a readable Initiated time: such an upload could not be judged.
 */
export async function parseUploadsPage(text: string): Promise<UploadsPage> {
  const parsed = (await parseXml(text)) as { ListMultipartUploadsResult?: unknown };
  const root = parsed.ListMultipartUploadsResult;
  // An empty page parses to '' with fast-xml-parser: no fields, no uploads.
  if (root === undefined) throw new MalformedUploads('no ListMultipartUploadsResult');
  const page = (typeof root === 'object' && root !== null ? root : {}) as Record<string, unknown>;
  const uploads: ListedUpload[] = [];
  for (const item of (page['Upload'] ?? []) as Record<string, unknown>[]) {
    const key = item['Key'];
    const uploadId = item['UploadId'];
    const initiated = new Date(typeof item['Initiated'] === 'string' ? item['Initiated'] : Number.NaN);
    if (typeof key !== 'string' || key === '') throw new MalformedUploads('<Upload> without <Key>');
    if (typeof uploadId !== 'string' || uploadId === '') {
      throw new MalformedUploads(`<Upload> of ${key} without <UploadId>`);
    }
    if (Number.isNaN(initiated.getTime())) {
      throw new MalformedUploads(`<Upload> of ${key} without a readable <Initiated>`);
    }
    uploads.push({ key, uploadId, initiated });
  }
  const field = (name: string): string | undefined => {
    const value = page[name];
    return typeof value === 'string' && value !== '' ? value : undefined;
  };
  return {
    uploads,
    isTruncated: field('IsTruncated') === 'true',
    nextKeyMarker: field('NextKeyMarker'),
    nextUploadIdMarker: field('NextUploadIdMarker'),
  };
}
