/**
 * GET /openapi.json: an OpenAPI 3.1 document generated from the routes as registered, so the typebox
 * schemas the routes validate with are the only source. OpenAPI 3.1 schemas are JSON Schema 2020-12,
 * which is what typebox emits, so schemas are copied as they are (minus typebox's non-JSON markers).
 *
 * `RouteCatalog.hook` is an onRoute hook: it must be added before the routes are registered.
 */
import type { FastifyPluginAsync, RouteOptions } from 'fastify';
import { ProblemSchema } from '../schemas/problem.js';

declare module 'fastify' {
  interface FastifySchema {
    /** One line for the OpenAPI operation. */
    summary?: string;
    description?: string;
    /** Media types of a route that does not answer JSON (the SSE stream). */
    produces?: readonly string[];
  }
}

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
  if (schema.body !== undefined || schema.params !== undefined || schema.querystring !== undefined) {
    responses['400'] ??= problemResponse('Validation failed; `detail` names the field');
  }
  responses['401'] ??= problemResponse('Missing or wrong bearer token');
  responses['403'] ??= problemResponse('Host header is not a loopback name (DNS-rebinding defence)');
  if (pathNames.length > 0) responses['404'] ??= problemResponse('No such resource');
  operation.responses = responses;
  return operation;
}

export function buildOpenApiDocument(routes: readonly CatalogRoute[], info: { title: string; version: string }): JsonObject {
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
    servers: [{ url: 'http://127.0.0.1:9845' }],
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

const openApiRoutes: FastifyPluginAsync<OpenApiRouteOptions> = async (app, options) => {
  let document: JsonObject | undefined;
  app.get('/openapi.json', {
    schema: { summary: 'This document: OpenAPI 3.1, generated from the route schemas' },
  }, async () => {
    // Built on first use, when every route is registered; the route table never changes afterwards.
    document ??= buildOpenApiDocument(options.catalog.routes, { title: 'NetClamp', version: options.version });
    return document;
  });
};

export default openApiRoutes;
