/**
 * Request validation. Bodies are checked strictly: no type coercion ("100" is not an amount)
 * and no silent dropping of unknown fields (a misspelt field is an error, not ignored).
 * Query strings and path parameters arrive as text, so there numbers are coerced.
 */
import { Ajv, type ErrorObject } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';
import { ApiError } from './errors.js';

function makeAjv(coerceTypes: boolean): Ajv {
  const ajv = new Ajv({ coerceTypes, removeAdditional: false, useDefaults: true, allErrors: false, strict: false });
  addFormats.default(ajv);
  return ajv;
}

const bodyAjv = makeAjv(false);
const textAjv = makeAjv(true);

export const validatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  const validate = (httpPart === 'body' ? bodyAjv : textAjv).compile(schema as object);
  const integers = httpPart === 'querystring' ? integerProperties(schema) : [];
  const checksText = httpPart === 'body' || httpPart === 'querystring';
  return (data: unknown) => {
    // Most parts have no integer parameter: no search (and no closure) for them on every request.
    const notDigits =
      integers.length === 0
        ? undefined
        : integers.find((name) => {
            const raw = (data as Record<string, unknown> | null)?.[name];
            return typeof raw === 'string' && !DIGITS.test(raw);
          });
    if (notDigits !== undefined) {
      return {
        error: new ApiError('parameter_invalid', `Invalid ${notDigits}: must be a whole number written in digits, such as 10.`, notDigits),
      };
    }
    if (!validate(data)) return { error: toApiError(validate.errors ?? [], httpPart ?? 'body') };
    const found = checksText ? unstorableText(data, '') : undefined;
    if (found !== undefined) {
      const why = found.problem === 'nul' ? 'must not contain the NUL character' : 'must be valid Unicode text (it holds a lone surrogate)';
      return { error: new ApiError('parameter_invalid', `Invalid ${found.param || httpPart}: ${why}.`, found.param || undefined) };
    }
    return { value: data };
  };
};

// Query strings are text that Ajv coerces with Number(), which reads '1e1' as 10, '0x10' as 16
// and ' 5 ' as 5: an integer parameter must be plain decimal digits before it is coerced.
const DIGITS = /^-?[0-9]+$/;

/** The names of a query schema's integer properties. */
function integerProperties(schema: unknown): string[] {
  const properties = (schema as { properties?: Record<string, { type?: unknown }> }).properties ?? {};
  return Object.entries(properties)
    .filter(([, property]) => property.type === 'integer')
    .map(([name]) => name);
}

// A high surrogate not followed by a low one, or a low one not preceded by a high one.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

type Unstorable = { param: string; problem: 'nul' | 'surrogate' };

/**
 * The parameter whose text (or, for objects, whose key) PostgreSQL cannot store: U+0000 (not in
 * text or jsonb) or a lone UTF-16 surrogate such as "\\ud800" (valid JSON, refused by jsonb,
 * silently replaced in text). Refused here, it is a 400 naming the parameter instead of a
 * failed query. Undefined when there is none.
 */
function unstorableText(value: unknown, path: string): Unstorable | undefined {
  if (typeof value === 'string') {
    const problem = textProblem(value);
    return problem ? { param: path, problem } : undefined;
  }
  if (value === null || typeof value !== 'object') return undefined;
  for (const [name, item] of Object.entries(value)) {
    const problem = textProblem(name);
    if (problem) return { param: path, problem };
    const found = unstorableText(item, join(path, name));
    if (found !== undefined) return found;
  }
  return undefined;
}

function textProblem(text: string): Unstorable['problem'] | undefined {
  if (text.includes('\u0000')) return 'nul';
  if (LONE_SURROGATE.test(text)) return 'surrogate';
  return undefined;
}

/** Turns the first schema violation into an error that names the parameter to fix. */
export function toApiError(errors: ErrorObject[], httpPart: string): ApiError {
  const error = errors[0];
  if (!error) return new ApiError('parameter_invalid', 'The request is invalid.');
  const base = paramPath(error.instancePath);
  // A malformed id in the path names nothing that exists: answer as for an unknown id.
  if (httpPart === 'params')
    return new ApiError('resource_missing', `No such object: the ${base || 'id'} in the URL is not a valid id.`, base || 'id');
  if (error.keyword === 'additionalProperties') {
    const name = join(base, String(error.params.additionalProperty));
    return new ApiError('parameter_unknown', `Received unknown parameter: ${name}`, name);
  }
  if (error.keyword === 'required') {
    const name = join(base, String(error.params.missingProperty));
    return new ApiError('parameter_missing', `Missing required parameter: ${name}`, name);
  }
  if (error.propertyName !== undefined) {
    return new ApiError(
      'parameter_invalid',
      `Invalid ${base || httpPart}: the key ${JSON.stringify(error.propertyName)} ${keyProblem(error)}.`,
      base || undefined,
    );
  }
  if (!base && httpPart === 'body' && error.keyword === 'type') {
    return new ApiError('body_invalid_json', 'The request body must be a JSON object.');
  }
  return new ApiError('parameter_invalid', `Invalid ${base || httpPart}: ${describe(error)}`, base || undefined);
}

/** What is wrong with an object's key, from the error of its propertyNames schema. */
function keyProblem(error: ErrorObject): string {
  switch (error.keyword) {
    case 'minLength':
      return 'is empty';
    case 'maxLength':
      return `is longer than ${error.params.limit} characters`;
    case 'pattern':
      return 'holds a control character (such as a line break or a tab)';
    default:
      return 'is not allowed';
  }
}

function describe(error: ErrorObject): string {
  switch (error.keyword) {
    case 'type':
      return `must be ${error.params.type === 'integer' ? 'an integer' : `of type ${error.params.type}`}`;
    case 'enum':
      return `must be one of ${(error.params.allowedValues as unknown[]).join(', ')}`;
    case 'maxLength':
      return `must be at most ${error.params.limit} characters`;
    case 'minLength':
      return `must be at least ${error.params.limit} characters`;
    case 'maxProperties':
      return `must have at most ${error.params.limit} entries`;
    default:
      return error.message ?? 'is invalid';
  }
}

/** `/metadata/order_id` → `metadata[order_id]`, the form integrators send parameters in. */
function paramPath(instancePath: string): string {
  const parts = instancePath
    .split('/')
    .filter(Boolean)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'));
  return parts.reduce((path, part) => join(path, part), '');
}

function join(base: string, name: string): string {
  return base ? `${base}[${name}]` : name;
}
