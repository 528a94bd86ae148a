import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  ReconcileResultSchema, RuleDraftSchema, RuleIdParamsSchema, RuleListSchema, RuleSchema, RuleUpdateSchema,
  validateRuleDraft, withDraftDefaults, type RuleDraft, type RuleDraftInput,
} from '../schemas/rule.js';
import { validationProblem } from '../http/problem.js';
import {
  ENGINE_WRITE_PROBLEMS, IF_MATCH_PROBLEMS, REVISION_PROBLEMS, SLOT_PROBLEMS,
} from './openapi.js';
import { parseIfMatch } from '../http/if-match.js';
import { nativeJsonSerializer } from '../http/native-json.js';
import { etagOf, parseRuleId, type RuleService } from '../services/rule-service.js';

export interface RuleRouteOptions {
  rules: RuleService;
  /** Prefix of Location headers, e.g. "/api/v1". */
  basePath: string;
}

function checkedDraft(input: RuleDraftInput): RuleDraft {
  const draft = withDraftDefaults(input);
  const errors = validateRuleDraft(draft);
  if (errors.length > 0) throw validationProblem(errors);
  return draft;
}

const ruleRoutes: FastifyPluginAsyncTypebox<RuleRouteOptions> = async (app, options) => {
  const { rules } = options;

  // RuleService.list() builds exactly RuleSchema's fields (present()); see native-json.ts for why.
  app.get('/rules', { schema: { response: { 200: RuleListSchema } }, serializerCompiler: nativeJsonSerializer }, async () => rules.list());

  app.get('/rules/:id', { schema: { params: RuleIdParamsSchema, response: { 200: RuleSchema } } }, async (request, reply) => {
    const rule = await rules.get(parseRuleId(request.params.id));
    reply.header('ETag', etagOf(rule));
    return rule;
  });

  app.post('/rules', {
    schema: { body: RuleDraftSchema, response: { 201: RuleSchema }, problems: { ...SLOT_PROBLEMS, ...ENGINE_WRITE_PROBLEMS } },
  }, async (request, reply) => {
    const rule = await rules.create(checkedDraft(request.body));
    reply.code(201).header('Location', `${options.basePath}/rules/${rule.id}`).header('ETag', etagOf(rule));
    return rule;
  });

  app.put('/rules/:id', {
    schema: {
      params: RuleIdParamsSchema, body: RuleUpdateSchema, response: { 200: RuleSchema },
      problems: { ...REVISION_PROBLEMS, ...SLOT_PROBLEMS, ...ENGINE_WRITE_PROBLEMS },
    },
  }, async (request, reply) => {
    const id = parseRuleId(request.params.id);
    const { revision, ...draftInput } = request.body;
    const ifMatch = parseIfMatch(request.headers['if-match']);
    const rule = await rules.update(id, checkedDraft(draftInput), { ifMatch, expectedRevision: revision });
    reply.header('ETag', etagOf(rule));
    return rule;
  });

  app.delete('/rules/:id', {
    schema: { params: RuleIdParamsSchema, problems: { ...IF_MATCH_PROBLEMS, ...REVISION_PROBLEMS, ...ENGINE_WRITE_PROBLEMS } },
  }, async (request, reply) => {
    const id = parseRuleId(request.params.id);
    await rules.delete(id, parseIfMatch(request.headers['if-match']));
    return reply.code(204).send();
  });

  // Registered before /rules/:id/retry matters only for readability: find-my-way prefers the static path.
  app.post('/rules/reconcile', {
    schema: { response: { 200: ReconcileResultSchema }, problems: ENGINE_WRITE_PROBLEMS },
  }, async () => rules.reconcile());

  app.post('/rules/:id/retry', {
    schema: { params: RuleIdParamsSchema, response: { 200: RuleSchema }, problems: ENGINE_WRITE_PROBLEMS },
  }, async (request, reply) => {
    const rule = await rules.retry(parseRuleId(request.params.id));
    reply.header('ETag', etagOf(rule));
    return rule;
  });
};

export default ruleRoutes;
