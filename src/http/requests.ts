// How the API reads a request before a route sees it: the JSON body, and the methods a path allows.

/** An error a request caused, with the HTTP status the error handler answers it with. */
export class RequestError extends Error {
  readonly statusCode: number;

  constructor(statusCode: number, message: string) {
    super(message);
    this.statusCode = statusCode;
  }
}

/**
 * Parses a request body as JSON. A `__proto__` key anywhere is refused, as fastify's own parser
 * does, since a schema that copies keys would set a prototype with it; the message says so rather
 * than calling valid JSON invalid.
 */
export function parseJsonBody(text: string): unknown {
  // A client that names JSON and sends nothing is likely broken; one that means `{}` sends no type.
  if (text.trim() === '')
    throw new RequestError(400, 'body is empty though Content-Type says JSON; send {}, or no Content-Type');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new RequestError(400, 'body is not valid JSON; send a JSON object, such as {}');
  }
  const at = protoKeyPath(value, 'body');
  if (at !== undefined) throw new RequestError(400, `${at}: the key "__proto__" is not accepted`);
  return value;
}

/**
 * How deep a body may nest. Every request body of the API is a flat object with lists and maps of
 * strings (3 levels); JSON.parse takes far deeper ones, which a recursive walk would overflow on.
 */
const MAX_BODY_DEPTH = 32;

/**
 * The dotted path of the first object that has an own `__proto__` key, or undefined. Throws a 400
 * for a body nested deeper than MAX_BODY_DEPTH.
 */
function protoKeyPath(value: unknown, path: string, depth = 1): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  if (depth > MAX_BODY_DEPTH)
    throw new RequestError(
      400,
      `body nests deeper than ${MAX_BODY_DEPTH} levels; send a JSON object such as {}`,
    );
  if (Object.hasOwn(value, '__proto__')) return path;
  for (const [key, child] of Object.entries(value)) {
    const found = protoKeyPath(child, `${path}.${key}`, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** The routes of a server by path pattern (`/restores/:id`), to tell "no such path" from "wrong method". */
export class RouteTable {
  readonly #routes: { segments: string[]; method: string }[] = [];

  add(method: string, url: string): void {
    this.#routes.push({ segments: url.split('/'), method });
  }

  /** The methods some route takes at path (without its query), sorted; empty when no route has that path. */
  allowed(path: string): string[] {
    const segments = path.split('/');
    const methods = this.#routes
      .filter(
        (route) =>
          route.segments.length === segments.length &&
          route.segments.every((s, i) => (s.startsWith(':') ? segments[i] !== '' : s === segments[i])),
      )
      .map((route) => route.method);
    return [...new Set(methods)].sort();
  }
}
