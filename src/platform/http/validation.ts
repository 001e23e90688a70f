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
  return (data: unknown) => {
    if (!validate(data)) return { error: toApiError(validate.errors ?? [], httpPart ?? 'body') };
    const param = httpPart === 'body' || httpPart === 'querystring' ? nulParam(data, '') : undefined;
    if (param !== undefined) {
      return {
        error: new ApiError('parameter_invalid', `Invalid ${param || httpPart}: must not contain the NUL character.`, param || undefined),
      };
    }
    return { value: data };
  };
};

/**
 * The parameter whose text (or, for objects, whose key) holds U+0000, which PostgreSQL cannot
 * store in text or jsonb: refused here, it is a 400 naming the parameter instead of a failed
 * query. Undefined when there is none.
 */
function nulParam(value: unknown, path: string): string | undefined {
  if (typeof value === 'string') return value.includes('\u0000') ? path : undefined;
  if (value === null || typeof value !== 'object') return undefined;
  for (const [name, item] of Object.entries(value)) {
    if (name.includes('\u0000')) return path;
    const found = nulParam(item, join(path, name));
    if (found !== undefined) return found;
  }
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
  if (!base && httpPart === 'body' && error.keyword === 'type') {
    return new ApiError('body_invalid_json', 'The request body must be a JSON object.');
  }
  return new ApiError('parameter_invalid', `Invalid ${base || httpPart}: ${describe(error)}`, base || undefined);
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
