// Locates the first syntax error in JSON text by line and column, with a reason that quotes none of
// the text: V8's JSON.parse messages on Node 20 quote a slice of it, which can hold a secret.

/** Where JSON text stops being JSON, and why, in words that never include the text itself. */
export interface JsonSyntaxError {
  /** 1-based line. */
  line: number;
  /** 1-based column, counted in UTF-16 code units as editors usually do. */
  column: number;
  reason: string;
}

/** Thrown inside the scan only, caught at its top. */
class Stop extends Error {
  readonly at: number;
  readonly reason: string;
  constructor(at: number, reason: string) {
    super(reason);
    this.at = at;
    this.reason = reason;
  }
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const HEX4 = /^[0-9a-fA-F]{4}$/;

/**
 * The first syntax error in `text`, or undefined when it is valid JSON. Meant for the error path
 * after JSON.parse threw: it is a plain recursive descent, not a fast parser.
 */
export function findJsonSyntaxError(text: string): JsonSyntaxError | undefined {
  let i = 0;
  const stop = (reason: string, at = i): never => {
    throw new Stop(at, at >= text.length ? 'the text ends early' : reason);
  };
  const space = () => {
    while (i < text.length && ' \t\n\r'.includes(text.charAt(i))) i++;
  };
  const string = () => {
    i++;
    for (;;) {
      if (i >= text.length) stop('');
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return;
      }
      if (c < 0x20) stop('a control character (such as a line break) inside a string; escape it');
      if (c === 0x5c) {
        const e = text.charAt(i + 1);
        if (e === 'u') {
          if (!HEX4.test(text.slice(i + 2, i + 6))) stop('a \\u escape needs four hex digits', i + 1);
          i += 6;
        } else if (e !== '' && '"\\/bfnrt'.includes(e)) i += 2;
        else stop('an invalid escape in a string', i + 1);
      } else i++;
    }
  };
  const value = (depth: number): void => {
    space();
    // Deeper than JSON.parse would go anyway; stops a stack overflow on hostile input.
    if (depth > 5000) stop('nested too deeply');
    const c = text.charAt(i);
    if (c === '{') {
      i++;
      space();
      if (text.charAt(i) === '}') {
        i++;
        return;
      }
      for (;;) {
        space();
        if (text.charAt(i) !== '"') stop('expected a property name in double quotes');
        string();
        space();
        if (text.charAt(i) !== ':') stop('expected ":" after the property name');
        i++;
        value(depth + 1);
        space();
        const next = text.charAt(i);
        i++;
        if (next === '}') return;
        if (next !== ',') stop('expected "," or "}"', i - 1);
      }
    }
    if (c === '[') {
      i++;
      space();
      if (text.charAt(i) === ']') {
        i++;
        return;
      }
      for (;;) {
        value(depth + 1);
        space();
        const next = text.charAt(i);
        i++;
        if (next === ']') return;
        if (next !== ',') stop('expected "," or "]"', i - 1);
      }
    }
    if (c === '"') {
      string();
      return;
    }
    if (c === '-' || (c >= '0' && c <= '9')) {
      NUMBER.lastIndex = i;
      if (!NUMBER.test(text)) stop('an invalid number');
      i = NUMBER.lastIndex;
      return;
    }
    for (const literal of ['true', 'false', 'null']) {
      if (text.startsWith(literal, i)) {
        i += literal.length;
        return;
      }
    }
    stop(
      c === "'"
        ? 'expected a value (strings take double quotes, not single)'
        : 'expected a value (a string in double quotes, a number, true, false, null, an object or a list)',
    );
  };
  try {
    if (text.startsWith('\uFEFF')) stop('the file starts with a byte order mark; save it without one');
    value(0);
    space();
    if (i < text.length) stop('more text after the JSON value');
    return undefined;
  } catch (err) {
    if (!(err instanceof Stop)) throw err;
    const before = text.slice(0, err.at);
    const lineStart = before.lastIndexOf('\n') + 1;
    return {
      line: before.split('\n').length,
      column: err.at - lineStart + 1,
      reason: err.reason,
    };
  }
}
