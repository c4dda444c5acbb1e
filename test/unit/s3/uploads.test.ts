// The ListMultipartUploads page reader, on pages shaped as radosgw writes them: keys that need
// escaping, one upload or several, truncated pages with their markers, and pages it must refuse.
import { describe, expect, it } from 'vitest';
import { MalformedUploads, parseUploadsPage } from '../../../src/s3/uploads.js';

function upload(key: string, id: string, initiated = '2026-12-05T21:59:19.511Z'): string {
  return (
    `<Upload><Key>${key}</Key><UploadId>${id}</UploadId>` +
    '<Initiator><ID>backup</ID><DisplayName>deis-backup target</DisplayName></Initiator>' +
    '<Owner><ID>backup</ID><DisplayName>deis-backup target</DisplayName></Owner>' +
    `<StorageClass>STANDARD</StorageClass><Initiated>${initiated}</Initiated></Upload>`
  );
}

function page(body: string): string {
  return (
    '<?xml version="1.0" encoding="UTF-8"?>' +
    `<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>deis-backups</Bucket>${body}</ListMultipartUploadsResult>`
  );
}

describe('parseUploadsPage', () => {
  it('reads one upload, with its key unescaped and its start time', async () => {
    const parsed = await parseUploadsPage(
      page(
        '<Prefix>p/</Prefix><NextKeyMarker>p/a b&amp;c</NextKeyMarker><NextUploadIdMarker>2~x</NextUploadIdMarker>' +
          `<MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>${upload('p/a b&amp;c', '2~x')}`,
      ),
    );
    expect(parsed).toEqual({
      uploads: [{ key: 'p/a b&c', uploadId: '2~x', initiated: new Date('2026-12-05T21:59:19.511Z') }],
      isTruncated: false,
      nextKeyMarker: 'p/a b&c',
      nextUploadIdMarker: '2~x',
    });
  });

  it('keeps keys and ids that look like numbers as text, and reads a truncated page', async () => {
    const parsed = await parseUploadsPage(
      page(
        '<IsTruncated>true</IsTruncated><NextKeyMarker>0001</NextKeyMarker><NextUploadIdMarker>2~9</NextUploadIdMarker>' +
          upload('0001', '2~1') +
          upload('0001', '2~9', '2026-12-05T22:00:00Z'),
      ),
    );
    expect(parsed.uploads.map((u) => [u.key, u.uploadId])).toEqual([
      ['0001', '2~1'],
      ['0001', '2~9'],
    ]);
    expect(parsed.uploads[1]?.initiated.toISOString()).toBe('2026-12-05T22:00:00.000Z');
    expect(parsed).toMatchObject({ isTruncated: true, nextKeyMarker: '0001', nextUploadIdMarker: '2~9' });
  });

  it('reads a page without uploads, with empty markers as none', async () => {
    expect(
      await parseUploadsPage(
        page(
          '<NextKeyMarker></NextKeyMarker><NextUploadIdMarker></NextUploadIdMarker><IsTruncated>false</IsTruncated>',
        ),
      ),
    ).toEqual({ uploads: [], isTruncated: false, nextKeyMarker: undefined, nextUploadIdMarker: undefined });
  });

  it('refuses what is not a page, and an upload it could not judge', async () => {
    await expect(parseUploadsPage('<ListBucketResult></ListBucketResult>')).rejects.toBeInstanceOf(
      MalformedUploads,
    );
    await expect(parseUploadsPage(page('<Upload><UploadId>2~x</UploadId></Upload>'))).rejects.toThrow(
      '<Upload> without <Key>',
    );
    await expect(
      parseUploadsPage(page('<Upload><Key>k</Key><Initiated>2026-12-05T00:00:00Z</Initiated></Upload>')),
    ).rejects.toThrow('<Upload> of k without <UploadId>');
    await expect(parseUploadsPage(page(upload('k', '2~x', 'yesterday')))).rejects.toThrow(
      '<Upload> of k without a readable <Initiated>',
    );
  });
});
