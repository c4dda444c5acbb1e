// The line the database restore appends to the dump, and how psql's answer to it is recognised.
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { EndMarker } from '../../../src/restore/database.js';

/** The token the appended line has psql print, read back from what the appender adds. */
async function appendedLine(marker: EndMarker, sql: string): Promise<string> {
  const out = await text(Readable.from([Buffer.from(sql)]).pipe(marker.appender()));
  expect(out.startsWith(sql)).toBe(true);
  return out.slice(sql.length);
}

describe('EndMarker', () => {
  it('appends one \\echo line of a random token after the SQL, on a line of its own', async () => {
    const marker = new EndMarker();
    const line = await appendedLine(marker, 'SELECT 1;');
    expect(line).toMatch(/^\n\\echo deis-backup-end-of-dump-[0-9a-f]{16}\n$/);
    expect(await appendedLine(new EndMarker(), '')).not.toBe(line);
  });

  it('sees the token in the output, whole or cut between chunks, and nothing else', async () => {
    const marker = new EndMarker();
    const token = marker.token;
    expect(await appendedLine(marker, '')).toBe(`\n\\echo ${token}\n`);
    const output = `SET\nCOPY 10\n${token}\n`;
    for (let cut = 0; cut <= output.length; cut++) {
      const seen = new EndMarker(token);
      seen.scan(Buffer.from(output.slice(0, cut)));
      seen.scan(Buffer.from(output.slice(cut)));
      expect(seen.seen, `cut at ${cut}`).toBe(true);
    }
    marker.scan(Buffer.from(`SET\n${token.slice(0, -1)}\n`));
    marker.scan(Buffer.from(token.slice(1)));
    expect(marker.seen).toBe(false);
    const byteByByte = new EndMarker(token);
    for (const byte of Buffer.from(`é${token}`)) byteByByte.scan(Buffer.from([byte]));
    expect(byteByByte.seen).toBe(true);
  });
});
