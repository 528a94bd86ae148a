/**
 * If-Match preconditions (RFC 9110 section 13.1.1) for resources whose ETag is their revision (rules,
 * quotas). The route parses the header (a malformed one is a 400 naming it, before anything is looked
 * up); the service checks it against the current revision inside its write queue, so the check and the
 * write cannot be separated by another writer.
 */
import { ProblemError } from './problem.js';

export interface EntityTag {
  weak: boolean;
  /** The characters between the quotes. */
  opaque: string;
}

/** `*` (any current representation) or a list of entity tags. */
export type IfMatch = { any: true } | { any: false; tags: EntityTag[] };

/** Preconditions of a PUT: the parsed If-Match header and the body's `revision`, each optional. */
export interface WriteConditions {
  ifMatch?: IfMatch | undefined;
  expectedRevision?: number | undefined;
}

const HEADER = 'If-Match';
// entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text (RFC 9110 8.8.3).
const ENTITY_TAG = /^(W\/)?"([\x21\x23-\x7e\x80-\xff]*)"/;

function malformed(raw: string, why: string): ProblemError {
  const message = `${why}; send "*" or quoted entity tags as the ETag header gives them, e.g. "3" (got ${JSON.stringify(raw)})`;
  return new ProblemError(400, `${HEADER}: ${message}`, { errors: [{ field: HEADER, message }] });
}

/** Parses an If-Match header; undefined when there is none. Throws a 400 problem when it is malformed. */
export function parseIfMatch(raw: string | undefined): IfMatch | undefined {
  if (raw === undefined) return undefined;
  const trimmed = raw.trim();
  if (trimmed === '*') return { any: true };
  const tags: EntityTag[] = [];
  let rest = trimmed;
  // A list: elements separated by commas with optional whitespace; empty elements are allowed by the
  // list rule (RFC 9110 5.6.1) but at least one tag must be there.
  while (rest !== '') {
    if (rest.startsWith(',')) {
      rest = rest.slice(1).trimStart();
      continue;
    }
    const match = ENTITY_TAG.exec(rest);
    if (match === null) {
      throw malformed(raw, rest.startsWith('*') ? '"*" cannot be combined with entity tags' : 'not a quoted entity tag');
    }
    tags.push({ weak: match[1] !== undefined, opaque: match[2]! });
    rest = rest.slice(match[0].length).trimStart();
    if (rest !== '' && !rest.startsWith(',')) throw malformed(raw, 'entity tags must be separated by commas');
  }
  if (tags.length === 0) throw malformed(raw, 'no entity tag given');
  return { any: false, tags };
}

/**
 * Throws a 409 unless `condition` matches the current `etag` (a strong tag such as `"3"`) of an existing
 * resource named `what`; `etag` null: the resource has none, so only `*` matches. Comparison is strong:
 * a weak tag never matches, whatever it says.
 */
export function requireIfMatch(condition: IfMatch | undefined, etag: string | null, what: string): void {
  if (condition === undefined || condition.any) return;
  if (etag === null) {
    throw new ProblemError(409, `If-Match: ${what} has no entity tag (it has no revision), so only If-Match: * can match`);
  }
  if (condition.tags.some((tag) => !tag.weak && `"${tag.opaque}"` === etag)) return;
  const given = condition.tags.map((tag) => `${tag.weak ? 'W/' : ''}"${tag.opaque}"`).join(', ');
  const weakNote = condition.tags.some((tag) => tag.weak)
    ? '; weak entity tags (W/"...") cannot match: If-Match uses strong comparison (RFC 9110 13.1.1), send the ETag as given'
    : '';
  throw new ProblemError(409, `If-Match ${given} does not match the current ETag of ${what} (${etag})${weakNote}; read it again and retry`);
}
