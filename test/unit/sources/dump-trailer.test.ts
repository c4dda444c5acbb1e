// How the end of a dump's SQL is judged complete: pg_dumpall's and pg_dump's last comment, with the
// `\unrestrict` line that pg_dump writes after it since its security releases of August 2025.
import { describe, expect, it } from 'vitest';
import { endsComplete } from '../../../src/sources/database.js';

describe('endsComplete', () => {
  it("accepts pg_dumpall's and pg_dump's completion, old and new", () => {
    expect(endsComplete('\n--\n-- PostgreSQL database cluster dump complete\n--\n\n')).toBe(true);
    expect(endsComplete('\n--\n-- PostgreSQL database dump complete\n--\n\n')).toBe(true);
    expect(endsComplete('\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict Ab3xZ9\n\n')).toBe(true);
  });

  it("takes only pg_dumpall's own line from a pg_dumpall: it ends each database with pg_dump's", () => {
    expect(endsComplete('\n--\n-- PostgreSQL database cluster dump complete\n--\n\n', true)).toBe(true);
    expect(
      endsComplete('-- PostgreSQL database cluster dump complete\n--\n\n\\unrestrict Ab3xZ9\n\n', true),
    ).toBe(true);
    // Cut right after the last database's section, before pg_dumpall's closing lines.
    expect(endsComplete('\n--\n-- PostgreSQL database dump complete\n--\n\n', true)).toBe(false);
    expect(endsComplete('-- PostgreSQL database dump complete\n--\n\n\\unrestrict Ab3xZ9\n\n', true)).toBe(
      false,
    );
  });

  it('refuses a dump cut before the completion, or an \\unrestrict line without it', () => {
    expect(endsComplete('COPY public.t (g) FROM stdin;\n1\n2\n')).toBe(false);
    expect(endsComplete('\\.\n\n\\unrestrict Ab3xZ9\n\n')).toBe(false);
    expect(
      endsComplete('-- PostgreSQL database dump complete\n--\n\n\\unrestrict Ab3xZ9\n\nSELECT 1;\n'),
    ).toBe(false);
  });
});
