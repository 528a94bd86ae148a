/**
 * /groups: installed rule groups (bundles) and the subscriptions that keep them current. Decisions the
 * reference leaves open are in docs/api.md ("Groups").
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  BundleSchema, checkBundle, GroupIdParamsSchema, GroupListSchema, GroupSchema, SubscribeBodySchema,
  SubscriptionResultSchema,
} from '../schemas/group.js';
import { validationProblem } from '../http/problem.js';
import {
  ENGINE_WRITE_PROBLEMS, IF_MATCH_PROBLEMS, SLOT_PROBLEMS, SUBSCRIPTION_FETCH_PROBLEMS,
} from './openapi.js';
import { parseIfMatch, requireIfMatch } from '../http/if-match.js';
import type { GroupService } from '../services/group-service.js';

export interface GroupRouteOptions {
  groups: GroupService;
  /** Prefix of Location headers, e.g. "/api/v1". */
  basePath: string;
}

const groupRoutes: FastifyPluginAsyncTypebox<GroupRouteOptions> = async (app, options) => {
  const { groups } = options;
  const location = (id: string): string => `${options.basePath}/groups/${encodeURIComponent(id)}`;

  app.get('/groups', { schema: { response: { 200: GroupListSchema } } }, async () => groups.list());

  app.get('/groups/:id', { schema: { params: GroupIdParamsSchema, response: { 200: GroupSchema } } }, async (request) => groups.get(request.params.id));

  // The schema documents the body (OpenAPI); the route checks it itself with `checkBundle`, the same check a
  // subscription's bundle gets, so that errors inside the rule list read "rules[2].remote_port".
  app.post('/groups/install', {
    schema: {
      body: BundleSchema, response: { 200: GroupSchema, 201: GroupSchema },
      problems: { ...SLOT_PROBLEMS, ...ENGINE_WRITE_PROBLEMS, 409: 'The group is kept current by a subscription' },
    },
    attachValidation: true,
  }, async (request, reply) => {
    const checked = checkBundle(request.body);
    if (checked.errors !== undefined) throw validationProblem(checked.errors);
    const { group, replaced } = await groups.install(checked.bundle);
    reply.code(replaced ? 200 : 201).header('Location', location(group.id));
    return group;
  });

  app.post('/groups/subscribe', {
    schema: {
      body: SubscribeBodySchema, response: { 201: SubscriptionResultSchema },
      problems: {
        ...SLOT_PROBLEMS, ...ENGINE_WRITE_PROBLEMS, ...SUBSCRIPTION_FETCH_PROBLEMS,
        409: 'The URL is already subscribed, or its bundle id belongs to another subscription',
      },
    },
  }, async (request, reply) => {
    const result = await groups.subscribe(request.body.url, request.body.interval_sec);
    reply.code(201).header('Location', location(result.group.id));
    return result;
  });

  app.delete('/groups/:id', {
    schema: {
      params: GroupIdParamsSchema,
      problems: { ...IF_MATCH_PROBLEMS, ...ENGINE_WRITE_PROBLEMS, 409: 'If-Match other than * (groups have no ETag)' },
    },
  }, async (request, reply) => {
    const ifMatch = parseIfMatch(request.headers['if-match']);
    if (ifMatch !== undefined) {
      groups.get(request.params.id); // 404 first: a precondition is about a group that exists
      // Groups carry no revision or ETag: no tag can match; `*` (any existing group) can.
      requireIfMatch(ifMatch, null, `group ${request.params.id}`);
    }
    await groups.uninstall(request.params.id);
    return reply.code(204).send();
  });

  app.post('/groups/:id/refresh', {
    schema: {
      params: GroupIdParamsSchema, response: { 200: SubscriptionResultSchema },
      problems: {
        ...SLOT_PROBLEMS, ...ENGINE_WRITE_PROBLEMS, ...SUBSCRIPTION_FETCH_PROBLEMS,
        409: 'The group was installed manually: it has no subscription to poll',
      },
    },
  }, async (request) => groups.refresh(request.params.id));
};

export default groupRoutes;
