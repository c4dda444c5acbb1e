// Reads one page of a ListObjects (v1 or v2) answer. A listing page is the one XML document read
// per object listed, so it gets a scanner of its own: it finds each <Contents> block and its four
// fields by position, instead of building a tree of the whole page (about 40 µs per object with
// fast-xml-parser, most of a nothing-changed nightly's CPU).

/** One page: its objects in order, and where the next page starts. */
export interface ListingPage {
  contents: { key: string; size: string; etag: string; lastModified: string }[];
  isTruncated: boolean;
  nextMarker: string | undefined;
  nextContinuationToken: string | undefined;
}

/** Thrown for a document that is not a well-formed listing page. */
export class MalformedListing extends Error {}

const ENTITY = /&(?:(amp|lt|gt|quot|apos)|#([0-9]+)|#x([0-9a-fA-F]+));/g;
const NAMED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** Replaces XML's five named entities and numeric character references. */
function decode(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(
    ENTITY,
    (_, name: string | undefined, dec: string | undefined, hex: string | undefined) => {
      if (name !== undefined) return NAMED[name] ?? '';
      return String.fromCodePoint(dec !== undefined ? Number(dec) : parseInt(hex ?? '', 16));
    },
  );
}

/** The decoded text of the first `<name>…</name>` in xml[from, to), or undefined. */
function field(xml: string, name: string, from: number, to: number): string | undefined {
  const open = `<${name}>`;
  const start = xml.indexOf(open, from);
  if (start < 0 || start >= to) return undefined;
  const end = xml.indexOf(`</${name}>`, start + open.length);
  if (end < 0 || end > to) throw new MalformedListing(`<${name}> is not closed`);
  return decode(xml.slice(start + open.length, end));
}

/** Parses one ListBucketResult page; throws MalformedListing when the document is not one. */
export function parseListing(xml: string): ListingPage {
  const root = xml.indexOf('<ListBucketResult');
  if (root < 0) throw new MalformedListing('no ListBucketResult');
  const contents: ListingPage['contents'] = [];
  // What lies outside the <Contents> blocks: the page's own fields, whatever their order.
  let outside = '';
  let at = root;
  for (;;) {
    const start = xml.indexOf('<Contents>', at);
    if (start < 0) break;
    const end = xml.indexOf('</Contents>', start);
    if (end < 0) throw new MalformedListing('<Contents> is not closed');
    outside += xml.slice(at, start);
    const key = field(xml, 'Key', start, end);
    if (key === undefined) throw new MalformedListing('<Contents> without <Key>');
    contents.push({
      key,
      size: field(xml, 'Size', start, end) ?? '',
      etag: field(xml, 'ETag', start, end) ?? '',
      lastModified: field(xml, 'LastModified', start, end) ?? '',
    });
    at = end + '</Contents>'.length;
  }
  outside += xml.slice(at);
  return {
    contents,
    isTruncated: field(outside, 'IsTruncated', 0, outside.length) === 'true',
    nextMarker: field(outside, 'NextMarker', 0, outside.length),
    nextContinuationToken: field(outside, 'NextContinuationToken', 0, outside.length),
  };
}
