/**
 * Problem documents (RFC 7807) and the mapping from schema-validation errors to field names, so a client
 * reads `remote_port: must be <= 65535` instead of a JSON pointer and a keyword.
 */
import { STATUS_CODES } from 'node:http';
import { Settings } from 'typebox/system';
import type { FieldError, Problem } from '../schemas/problem.js';

/**
 * typebox stops collecting errors after 8 by default, so a 400 would name only some of the bad fields.
 * Raised once for the process (a global setting, read at every Errors() call) by every module that
 * turns schema errors into problems; a cap remains so a 1 MiB bundle of bad drafts cannot make a
 * multi-megabyte answer.
 */
export const MAX_FIELD_ERRORS = 1000;
Settings.Set({ maxErrors: MAX_FIELD_ERRORS });

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** An error that becomes a problem response with its own status, detail and headers. */
export class ProblemError extends Error {
  readonly status: number;
  readonly detail: string;
  readonly errors: FieldError[] | undefined;
  readonly headers: Record<string, string>;
  constructor(status: number, detail: string, options: { errors?: FieldError[]; headers?: Record<string, string> } = {}) {
    super(detail);
    this.name = 'ProblemError';
    this.status = status;
    this.detail = detail;
    this.errors = options.errors;
    this.headers = options.headers ?? {};
  }
}

export function problemBody(status: number, detail: string, errors?: FieldError[]): Problem {
  const body: Problem = { type: 'about:blank', title: STATUS_CODES[status] ?? 'Error', status, detail };
  if (errors !== undefined && errors.length > 0) body.errors = errors;
  return body;
}

/** A 400 whose detail names every offending field, e.g. "remote_port: must be <= 65535". */
export function validationProblem(errors: FieldError[]): ProblemError {
  return new ProblemError(400, errors.map((e) => `${e.field}: ${e.message}`).join('; '), { errors });
}

/** The shape both ajv and typebox report errors in. */
export interface SchemaValidationIssue {
  keyword: string;
  instancePath: string;
  schemaPath?: string;
  params: Record<string, unknown>;
  message?: string;
}

function fieldName(context: string | undefined, instancePath: string): string {
  const pointer = instancePath.replace(/^\//, '').split('/').map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'));
  const name = pointer.filter((part) => part !== '').join('.');
  if (name !== '') return name;
  return context === 'body' || context === undefined ? '(body)' : `(${context})`;
}

/**
 * Collapses the raw issues into one message per field. A union (`anyOf`) reports one issue per branch;
 * the user needs only the branch that had the right type ("must be >= 1"), or the list of allowed values.
 * `query` is the parsed query string (for `querystring` issues), to tell a repeated parameter from a bad one.
 */
export function fieldErrorsFromSchemaIssues(
  issues: readonly SchemaValidationIssue[], context?: string, query?: Record<string, unknown>,
): FieldError[] {
  const byPath = new Map<string, SchemaValidationIssue[]>();
  const result: FieldError[] = [];
  const seen = new Set<string>();
  const push = (field: string, message: string): void => {
    const key = `${field}\0${message}`;
    if (seen.has(key)) return;
    seen.add(key);
    result.push({ field, message });
  };
  for (const issue of issues) {
    if (issue.keyword === 'additionalProperties') {
      const names = (issue.params.additionalProperties ?? issue.params.additionalProperty) as string[] | string | undefined;
      const parent = issue.instancePath.replace(/^\//, '');
      for (const name of Array.isArray(names) ? names : names !== undefined ? [names] : []) {
        push(parent === '' ? name : `${fieldName(context, issue.instancePath)}.${name}`, 'unknown field');
      }
      continue;
    }
    if (issue.keyword === 'boolean' && (issue.schemaPath ?? '').endsWith('additionalProperties')) {
      // The same unknown field, reported by typebox a second time as "schema is false".
      push(fieldName(context, issue.instancePath), 'unknown field');
      continue;
    }
    if (context === 'querystring' && issue.keyword === 'type' && Array.isArray(query?.[issue.instancePath.slice(1)])) {
      // `?window=60&window=2` parses to an array: the client repeated a parameter that takes one value.
      push(fieldName(context, issue.instancePath), 'give it once');
      continue;
    }
    if (issue.keyword === 'required') {
      const names = (issue.params.requiredProperties ?? issue.params.missingProperty) as string[] | string | undefined;
      const parent = issue.instancePath.replace(/^\//, '');
      for (const name of Array.isArray(names) ? names : names !== undefined ? [names] : []) {
        push(parent === '' ? name : `${fieldName(context, issue.instancePath)}.${name}`, 'is required');
      }
      continue;
    }
    const list = byPath.get(issue.instancePath) ?? [];
    list.push(issue);
    byPath.set(issue.instancePath, list);
  }
  for (const [instancePath, list] of byPath) {
    const field = fieldName(context, instancePath);
    if (list.some((issue) => issue.keyword === 'anyOf')) {
      const branches = list.filter((issue) => issue.keyword !== 'anyOf');
      const allowed = branches.filter((issue) => issue.keyword === 'const' || issue.keyword === 'enum');
      if (allowed.length > 0 && allowed.length === branches.filter((i) => i.keyword !== 'type').length) {
        const values = allowed.flatMap((issue) => {
          const v = issue.params.allowedValue ?? issue.params.allowedValues;
          return Array.isArray(v) ? v : [v];
        });
        const typeIssue = branches.find((i) => i.keyword === 'type');
        const nullable = typeIssue !== undefined && typeIssue.params.type === 'null';
        push(field, `must be one of ${values.map((v) => JSON.stringify(v)).join(', ')}${nullable ? ' or null' : ''}`);
        continue;
      }
      const specific = branches.filter((issue) => issue.keyword !== 'type');
      if (specific.length > 0) {
        for (const issue of specific) push(field, issue.message ?? issue.keyword);
      } else {
        const types = branches.map((issue) => String(issue.params.type));
        push(field, `must be ${[...new Set(types)].join(' or ')}`);
      }
      continue;
    }
    for (const issue of list) {
      if (issue.keyword === 'enum' && Array.isArray(issue.params.allowedValues)) {
        push(field, `must be one of ${issue.params.allowedValues.map((v) => JSON.stringify(v)).join(', ')}`);
      } else {
        push(field, issue.message ?? issue.keyword);
      }
    }
  }
  if (result.length === 0) result.push({ field: fieldName(context, ''), message: 'is invalid' });
  return result;
}
