// Input validation shared by the config file and the HTTP API, on valibot (about 10 ms to load,
// where zod 4 took 60 to 100 ms of every CLI start). Messages never quote the value given: a secret
// in the wrong field must not reach a log or a terminal.
import * as v from 'valibot';

/** What a list gets where an object belongs. */
const notAList = v.custom<never>(() => false, 'must be an object, not a list');

/**
 * An object schema that refuses unknown keys and reports every one of them (valibot's own
 * strictObject stops at the first), and refuses a list, which valibot's object schemas take as an
 * object with numbered keys. Unknown keys never reach the output, so its type is strictObject's.
 */
export function strictObject<const E extends v.ObjectEntries>(
  entries: E,
): v.StrictObjectSchema<E, undefined> {
  const schema = v.objectWithRest(entries, v.never());
  // '~run' is what valibot's parse calls, and its interface for schemas built outside it: the list
  // check goes in front. ('~standard', for other libraries, is objectWithRest's: nothing here uses it.)
  const guarded: typeof schema = {
    ...schema,
    '~run': (dataset, config) =>
      Array.isArray(dataset.value) ? notAList['~run'](dataset, config) : schema['~run'](dataset, config),
  };
  return guarded as unknown as v.StrictObjectSchema<E, undefined>;
}

/** One problem found in an input: where it is (dotted path, '' for the top) and what is wrong. */
export type Problem =
  | { kind: 'unknown'; path: string; keys: string[] }
  | { kind: 'missing'; path: string }
  | { kind: 'invalid'; path: string; message: string };

/** Validates input against schema: the output, or every problem found (unknown keys grouped per object). */
export function validate<S extends v.GenericSchema>(
  schema: S,
  input: unknown,
): { ok: true; value: v.InferOutput<S> } | { ok: false; problems: Problem[] } {
  const result = v.safeParse(schema, input, { abortEarly: false, message: describe });
  if (result.success) return { ok: true, value: result.output };
  const problems: Problem[] = [];
  const unknown = new Map<string, string[]>();
  for (const issue of result.issues) {
    const keys = (issue.path ?? []).map((item) => String(item.key));
    if (issue.type === 'never') {
      const key = keys.pop() ?? '';
      const path = keys.join('.');
      const known = unknown.get(path);
      if (known) known.push(key);
      else {
        const list = [key];
        unknown.set(path, list);
        problems.push({ kind: 'unknown', path, keys: list });
      }
    } else if (issue.kind === 'schema' && issue.input === undefined) {
      problems.push({ kind: 'missing', path: keys.join('.') });
    } else {
      problems.push({ kind: 'invalid', path: keys.join('.'), message: issue.message });
    }
  }
  return { ok: false, problems };
}

/** The message of an issue whose schema or check names none of its own. */
function describe(issue: v.BaseIssue<unknown>): string {
  const requirement = issue.requirement;
  switch (issue.type) {
    case 'picklist':
      return `must be one of ${(issue.expected ?? '')
        .replace(/^\(|\)$/g, '')
        .split(' | ')
        .join(', ')}`;
    case 'min_value':
      return `must be at least ${String(requirement)}`;
    case 'max_value':
      return `must be at most ${String(requirement)}`;
    case 'integer':
      return 'must be a whole number';
    case 'min_length':
      if (Array.isArray(issue.input)) return `must list at least ${String(requirement)}`;
      return requirement === 1 ? 'must not be empty' : `must be at least ${String(requirement)} characters`;
    case 'regex':
    case 'starts_with':
    case 'check':
      return 'is not valid';
    default:
      return `must be ${typeName(issue.expected ?? '')}, not ${typeName(kindOf(issue.input))}`;
  }
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'Array';
  return typeof value;
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  boolean: 'true or false',
  Object: 'an object',
  object: 'an object',
  Array: 'a list',
  null: 'null',
};

function typeName(valibotName: string): string {
  return TYPE_NAMES[valibotName] ?? valibotName;
}
