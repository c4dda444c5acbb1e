// The listing scanner against fast-xml-parser (the parser it replaces on this path) as the oracle,
// on pages shaped as radosgw and AWS write them, with keys that need escaping.
import { XMLParser } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';
import { MalformedListing, parseListing as parseBytes } from '../../../src/s3/listing.js';

/** The scanner reads the page's bytes, as the client hands it them. */
const parseListing = (xml: string) => parseBytes(Buffer.from(xml));

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

interface Item {
  key: string;
  size: number;
  etag: string;
  lastModified: string;
}

function page(items: readonly Item[], tail: string, head = ''): string {
  const contents = items
    .map(
      (o) =>
        `<Contents><Key>${escape(o.key)}</Key><LastModified>${o.lastModified}</LastModified>` +
        `<ETag>&quot;${o.etag}&quot;</ETag><Size>${o.size}</Size><StorageClass>STANDARD</StorageClass>` +
        `<Owner><ID>deis</ID><DisplayName>deis</DisplayName></Owner></Contents>`,
    )
    .join('');
  return (
    '<?xml version="1.0" encoding="UTF-8"?>' +
    `<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>registry</Name>${head}${contents}${tail}</ListBucketResult>`
  );
}

const oracle = new XMLParser({
  ignoreAttributes: true,
  parseTagValue: false,
  trimValues: false,
  isArray: (name) => name === 'Contents',
});

const KEYS = [
  'registry/images/0a1b/layer',
  'wal_005/000000010000000000000003.lzo',
  'a&b<c>d"e\'f',
  'ünïcødé/ключ/鍵',
  '  spaces  around  ',
  'tab\there',
  'registry/repositories/library/app/_index_images',
];

describe('parseListing', () => {
  const items: Item[] = KEYS.map((key, i) => ({
    key,
    size: i * 1000,
    etag: `${i}e2b3c`.padEnd(32, '0'),
    lastModified: `2026-11-2${i}T10:00:00.000Z`,
  }));

  it('reads what fast-xml-parser reads, field by field', () => {
    const xml = page(
      items,
      '<IsTruncated>false</IsTruncated>',
      '<Prefix></Prefix><Marker></Marker><MaxKeys>1000</MaxKeys>',
    );
    const got = parseListing(xml);
    const want = (oracle.parse(xml) as { ListBucketResult: { Contents: Record<string, string>[] } })
      .ListBucketResult.Contents;
    expect(got.contents.map((c) => c.key)).toEqual(KEYS);
    expect(got.contents).toEqual(
      want.map((c) => ({
        key: c['Key'],
        size: c['Size'],
        etag: c['ETag'],
        lastModified: c['LastModified'],
      })),
    );
    expect(got.isTruncated).toBe(false);
    expect(got.nextMarker).toBeUndefined();
  });

  it('finds the page fields before or after the objects, for v1 and v2', () => {
    const after = parseListing(
      page(items.slice(0, 2), '<IsTruncated>true</IsTruncated><NextMarker>a&amp;b</NextMarker>'),
    );
    expect(after).toMatchObject({ isTruncated: true, nextMarker: 'a&b' });
    expect(after.contents).toHaveLength(2);
    const before = parseListing(
      page(
        items.slice(0, 1),
        '',
        '<IsTruncated>true</IsTruncated><NextContinuationToken>tok/+=</NextContinuationToken>',
      ),
    );
    expect(before).toMatchObject({
      isTruncated: true,
      nextContinuationToken: 'tok/+=',
      nextMarker: undefined,
    });
  });

  it('decodes numeric character references', () => {
    const got = parseListing(
      page([], '<IsTruncated>false</IsTruncated><NextMarker>&#65;&#x42;&#x1F600;</NextMarker>'),
    );
    expect(got.nextMarker).toBe('AB😀');
    expect(got.contents).toEqual([]);
  });

  it('refuses documents that are not a listing page', () => {
    expect(() => parseListing('<Error><Code>AccessDenied</Code></Error>')).toThrow(MalformedListing);
    expect(() => parseListing('<ListBucketResult><Contents><Key>a</Key>')).toThrow(/not closed/);
    expect(() =>
      parseListing('<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>'),
    ).toThrow(/without <Key>/);
    expect(() => parseListing('<ListBucketResult><Contents><Key>a</Contents></ListBucketResult>')).toThrow(
      /<Key> is not closed/,
    );
  });
});
