/**
 * GET /openapi.json: an OpenAPI 3.1 document generated from the routes as registered, so the typebox
 * schemas the routes validate with are the only source. OpenAPI 3.1 schemas are JSON Schema 2020-12,
 * which is what typebox emits, so schemas are copied as they are (minus typebox's non-JSON markers).
 *
 * `RouteCatalog.hook` is an onRoute hook: it must be added before the routes are registered.
 *
 * Problem responses: what every route can answer is added here (401, 403, 500; 400 when some input can be
 * invalid; 404 with path parameters; 413/415 for POST/PUT); the rest a route declares in its schema's
 * `problems` (status -> why), using the shared descriptions below where they fit.
 */
import type { FastifyPluginAsync, FastifyRequest, RouteOptions } from 'fastify';
import { ProblemSchema } from '../schemas/problem.js';

declare module 'fastify' {
  interface FastifySchema {
    /** One line for the OpenAPI operation. */
    summary?: string;
    description?: string;
    /** Media types of a route that does not answer JSON (the SSE stream). */
    produces?: readonly string[];
    /** Problem statuses this route answers beyond those every route can give, with why. */
    problems?: ProblemStatuses;
  }
}

export type ProblemStatuses = Readonly<Record<number, string>>;

/** Writes the engine must take (rules, group installs). */
export const ENGINE_WRITE_PROBLEMS: ProblemStatuses = {
  503: 'The filtering engine is not OPEN (Retry-After: 5); nothing was changed',
};
/** Writes that may take a clamp slot. */
export const SLOT_PROBLEMS: ProblemStatuses = {
  402: 'No clamp slot left: enabled LIMIT rules and quotas would exceed the licensed cap',
};
/** Calls that reach the license server; its own refusals are passed on (docs/api.md, "Licensing"). */
export const LICENSE_SERVER_PROBLEMS: ProblemStatuses = {
  400: 'Invalid input, or the license server refused it as invalid',
  404: 'The license server does not know the credit or checkout',
  409: 'The license server refused it (already bound, stale binding...); nothing was changed here',
  502: 'The license server failed or answered something invalid',
  503: 'No license server is configured ([license] server_url)',
  504: 'The license server did not answer in time',
};
/** Polls of a subscription URL. */
export const SUBSCRIPTION_FETCH_PROBLEMS: ProblemStatuses = {
  502: 'The subscription URL failed, answered too much, redirected too often, or sent an invalid bundle',
  504: 'The subscription URL did not answer in time',
};
/** A rule or quota write against its current revision or owner. */
export const REVISION_PROBLEMS: ProblemStatuses = {
  409: 'Stale If-Match or body revision, or owned by a group',
};
/** Routes without a body that read If-Match. */
export const IF_MATCH_PROBLEMS: ProblemStatuses = {
  400: 'Malformed If-Match header',
};
export const RATE_LIMITED_PROBLEMS: ProblemStatuses = {
  429: 'Called too often (Retry-After)',
};

export const OPENAPI_VERSION = '3.1.0';

type JsonObject = Record<string, unknown>;

export interface CatalogRoute {
  method: string;
  url: string;
  schema: JsonObject;
}

export class RouteCatalog {
  readonly routes: CatalogRoute[] = [];

  /** For app.addHook('onRoute', ...). fastify's own HEAD twins of GET routes are left out later. */
  readonly hook = (route: RouteOptions): void => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) this.routes.push({ method, url: route.url, schema: (route.schema ?? {}) as JsonObject });
  };
}

/** Deep copy as plain JSON: drops typebox's non-enumerable markers and anything that is not JSON. */
function plain(schema: unknown): JsonObject {
  return JSON.parse(JSON.stringify(schema)) as JsonObject;
}

/** Can a request fail this schema? A params object of plain strings cannot (a bad id is then a 404). */
function constrains(schema: unknown): boolean {
  if (schema === undefined) return false;
  const properties = (plain(schema).properties ?? {}) as Record<string, JsonObject>;
  const unconstrained = new Set(['type', 'description', 'title']);
  return Object.values(properties).some((property) => Object.keys(property).some((key) => !unconstrained.has(key)));
}

function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function parametersOf(schema: unknown, location: 'path' | 'query' | 'header', pathNames: string[]): JsonObject[] {
  const parameters: JsonObject[] = [];
  const object = schema === undefined ? undefined : plain(schema);
  const properties = (object?.properties ?? {}) as Record<string, JsonObject>;
  const required = new Set((object?.required ?? []) as string[]);
  for (const [name, property] of Object.entries(properties)) {
    const { description, ...propertySchema } = property;
    const parameter: JsonObject = { name, in: location, required: location === 'path' || required.has(name), schema: propertySchema };
    if (typeof description === 'string') parameter.description = description;
    parameters.push(parameter);
  }
  if (location === 'path') {
    // A path parameter without a schema is still a parameter.
    for (const name of pathNames) {
      if (!(name in properties)) parameters.push({ name, in: 'path', required: true, schema: { type: 'string' } });
    }
  }
  return parameters;
}

const PROBLEM_REF = { $ref: '#/components/schemas/Problem' };
const problemResponse = (description: string): JsonObject => ({
  description, content: { 'application/problem+json': { schema: PROBLEM_REF } },
});

function operationOf(route: CatalogRoute): JsonObject {
  const { schema } = route;
  const pathNames = [...route.url.matchAll(/:([A-Za-z0-9_]+)/g)].map((match) => match[1]!);
  const parameters = [
    ...parametersOf(schema.params, 'path', pathNames),
    ...parametersOf(schema.querystring, 'query', []),
    ...parametersOf(schema.headers, 'header', []),
  ];
  const operation: JsonObject = {
    operationId: `${route.method.toLowerCase()}${route.url.replace(/^\/api\/v1/, '').replace(/[/:{}]+([a-z])?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
  };
  if (typeof schema.summary === 'string') operation.summary = schema.summary;
  if (typeof schema.description === 'string') operation.description = schema.description;
  if (parameters.length > 0) operation.parameters = parameters;
  if (schema.body !== undefined) {
    operation.requestBody = { required: true, content: { 'application/json': { schema: plain(schema.body) } } };
  }

  const responses: JsonObject = {};
  const declared = (schema.response ?? {}) as Record<string, unknown>;
  for (const [status, responseSchema] of Object.entries(declared)) {
    responses[status] = { description: `HTTP ${status}`, content: { 'application/json': { schema: plain(responseSchema) } } };
  }
  const produces = schema.produces as readonly string[] | undefined;
  if (produces !== undefined && responses['200'] === undefined) {
    responses['200'] = {
      description: 'A stream',
      content: Object.fromEntries(produces.map((type) => [type, { schema: { type: 'string' } }])),
    };
  }
  if (Object.keys(responses).every((status) => !status.startsWith('2'))) {
    // No declared success schema: a GET answers some JSON document (this one), a write answers nothing.
    if (route.method === 'GET') responses['200'] = { description: 'A JSON document', content: { 'application/json': { schema: { type: 'object' } } } };
    else responses['204'] = { description: 'No content' };
  }
  // What every route can answer (see docs/api.md, "Every request").
  const takesBody = ['POST', 'PUT', 'PATCH'].includes(route.method);
  const generic: Record<number, string> = {};
  if (schema.body !== undefined || schema.querystring !== undefined || constrains(schema.params)) {
    generic[400] = 'Validation failed; `detail` names the field';
  }
  generic[401] = 'Missing or wrong bearer token';
  generic[403] = 'Host header is not a loopback name (DNS-rebinding defence)';
  if (pathNames.length > 0) generic[404] = 'No such resource';
  if (takesBody) {
    generic[413] = 'Body larger than 1 MiB';
    generic[415] = 'Body is not application/json';
  }
  generic[500] = 'Unexpected; the details are in service.log';
  for (const [status, description] of Object.entries({ ...generic, ...(schema.problems as ProblemStatuses | undefined) })) {
    responses[status] ??= problemResponse(description);
  }
  operation.responses = Object.fromEntries(Object.entries(responses).sort(([a], [b]) => Number(a) - Number(b)));
  return operation;
}

/** `servers` names where this service answers, e.g. http://127.0.0.1:19845 (the route passes the live address). */
export function buildOpenApiDocument(
  routes: readonly CatalogRoute[], info: { title: string; version: string }, servers: readonly JsonObject[],
): JsonObject {
  const paths: Record<string, JsonObject> = {};
  for (const route of routes) {
    if (route.method === 'HEAD' || route.method === 'OPTIONS') continue;
    const key = openApiPath(route.url);
    paths[key] ??= {};
    paths[key][route.method.toLowerCase()] = operationOf(route);
  }
  return {
    openapi: OPENAPI_VERSION,
    info: { title: info.title, version: info.version, description: 'Local REST API of the NetClamp service (see docs/api.md).' },
    servers,
    security: [{ bearer: [] }],
    paths,
    components: {
      schemas: { Problem: plain(ProblemSchema) },
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'The token in auth.token in the data dir' } },
    },
  };
}

export interface OpenApiRouteOptions {
  catalog: RouteCatalog;
  version: string;
}

/**
 * The address this request reached the service at: the Host header (already checked to be loopback), with
 * the port of the connection when the header has none. Not a constant: --listen and PUT /config move it.
 */
function serverUrlOf(request: FastifyRequest): string {
  const host = request.headers.host ?? '127.0.0.1';
  if (/:\d+$/.test(host)) return `http://${host}`;
  const port = request.socket.localPort;
  return port === undefined ? `http://${host}` : `http://${host}:${port}`;
}

const openApiRoutes: FastifyPluginAsync<OpenApiRouteOptions> = async (app, options) => {
  let document: JsonObject | undefined;
  app.get('/openapi.json', {
    schema: { summary: 'This document: OpenAPI 3.1, generated from the route schemas' },
  }, async (request) => {
    // Built on first use, when every route is registered; the route table never changes afterwards. The
    // address does, so `servers` is filled in per request.
    document ??= buildOpenApiDocument(options.catalog.routes, { title: 'NetClamp', version: options.version }, []);
    return { ...document, servers: [{ url: serverUrlOf(request) }] };
  });
};

export default openApiRoutes;
