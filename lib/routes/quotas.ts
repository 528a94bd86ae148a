import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  QuotaDraftSchema, QuotaIdParamsSchema, QuotaListSchema, QuotaSchema, QuotaUpdateSchema,
  validateQuotaDraft, withQuotaDefaults, type QuotaDraft, type QuotaDraftInput,
} from '../schemas/quota.js';
import { validationProblem } from '../http/problem.js';
import { IF_MATCH_PROBLEMS, REVISION_PROBLEMS, SLOT_PROBLEMS } from './openapi.js';
import { parseIfMatch } from '../http/if-match.js';
import { etagOf, parseQuotaId, type QuotaService } from '../services/quota-service.js';

export interface QuotaRouteOptions {
  quotas: QuotaService;
  /** Prefix of Location headers, e.g. "/api/v1". */
  basePath: string;
}

function checkedDraft(input: QuotaDraftInput): QuotaDraft {
  const draft = withQuotaDefaults(input);
  const errors = validateQuotaDraft(draft);
  if (errors.length > 0) throw validationProblem(errors);
  return draft;
}

const quotaRoutes: FastifyPluginAsyncTypebox<QuotaRouteOptions> = async (app, options) => {
  const { quotas } = options;

  app.get('/quotas', { schema: { response: { 200: QuotaListSchema } } }, async () => quotas.list());

  app.get('/quotas/:id', { schema: { params: QuotaIdParamsSchema, response: { 200: QuotaSchema } } }, async (request, reply) => {
    const quota = quotas.get(parseQuotaId(request.params.id));
    reply.header('ETag', etagOf(quota));
    return quota;
  });

  app.post('/quotas', {
    schema: { body: QuotaDraftSchema, response: { 201: QuotaSchema }, problems: SLOT_PROBLEMS },
  }, async (request, reply) => {
    const quota = await quotas.create(checkedDraft(request.body));
    reply.code(201).header('Location', `${options.basePath}/quotas/${quota.id}`).header('ETag', etagOf(quota));
    return quota;
  });

  app.put('/quotas/:id', {
    schema: {
      params: QuotaIdParamsSchema, body: QuotaUpdateSchema, response: { 200: QuotaSchema },
      problems: { ...REVISION_PROBLEMS, ...SLOT_PROBLEMS },
    },
  }, async (request, reply) => {
    const id = parseQuotaId(request.params.id);
    const { revision, ...draftInput } = request.body;
    const quota = await quotas.update(id, checkedDraft(draftInput), { ifMatch: parseIfMatch(request.headers['if-match']), expectedRevision: revision });
    reply.header('ETag', etagOf(quota));
    return quota;
  });

  app.delete('/quotas/:id', {
    schema: { params: QuotaIdParamsSchema, problems: { ...IF_MATCH_PROBLEMS, ...REVISION_PROBLEMS } },
  }, async (request, reply) => {
    const id = parseQuotaId(request.params.id);
    await quotas.delete(id, parseIfMatch(request.headers['if-match']));
    return reply.code(204).send();
  });

  app.post('/quotas/:id/reset', { schema: { params: QuotaIdParamsSchema, response: { 200: QuotaSchema } } }, async (request, reply) => {
    const quota = await quotas.reset(parseQuotaId(request.params.id));
    reply.header('ETag', etagOf(quota));
    return quota;
  });
};

export default quotaRoutes;
