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

  it('refuses a dump cut before the completion, or an \\unrestrict line without it', () => {
    expect(endsComplete('COPY public.t (g) FROM stdin;\n1\n2\n')).toBe(false);
    expect(endsComplete('\\.\n\n\\unrestrict Ab3xZ9\n\n')).toBe(false);
    expect(
      endsComplete('-- PostgreSQL database dump complete\n--\n\n\\unrestrict Ab3xZ9\n\nSELECT 1;\n'),
    ).toBe(false);
  });
});
