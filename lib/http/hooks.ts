/**
 * Request gatekeeping and the problem-document error handling, installed on the root context so they
 * cover every route, including unknown ones.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  PROBLEM_CONTENT_TYPE, ProblemError, fieldErrorsFromSchemaIssues, problemBody, validationProblem,
  type SchemaValidationIssue,
} from './problem.js';
import { isLoopbackHost } from './host-check.js';
import { engineProblem, isEngineError } from './engine-problem.js';
import type { TokenVerifier } from '../services/auth-token.js';

export function sendProblem(reply: FastifyReply, error: ProblemError): FastifyReply {
  for (const [name, value] of Object.entries(error.headers)) reply.header(name, value);
  return reply.code(error.status).type(PROBLEM_CONTENT_TYPE).send(problemBody(error.status, error.detail, error.errors));
}

export function installGatekeeping(app: FastifyInstance, tokens: TokenVerifier): void {
  app.addHook('onRequest', async (request, reply) => {
    if (!isLoopbackHost(request.headers.host)) {
      return sendProblem(reply, new ProblemError(403, 'Host header must name a loopback address (localhost, 127.0.0.0/8 or [::1]); request refused as a DNS-rebinding defence'));
    }
    if (!tokens.verifyHeader(request.headers.authorization)) {
      const missing = request.headers.authorization === undefined;
      return sendProblem(reply, new ProblemError(401, missing ? 'missing bearer token' : 'invalid bearer token', {
        headers: { 'WWW-Authenticate': missing ? 'Bearer realm="netclamp"' : 'Bearer realm="netclamp", error="invalid_token"' },
      }));
    }
    return undefined;
  });
}

/**
 * A 500 is a defect: error level with the stack, which its detail points the reader to. 502/503/504 are
 * expected states (engine down, upstream failed or slow) the caller was told about: one warn line with the
 * status and detail, no stack. 4xx are the caller's and not logged.
 */
function logServerProblem(request: FastifyRequest, problem: ProblemError, cause: Error): void {
  if (problem.status < 500) return;
  if (problem.status === 500) {
    request.log.error({ err: cause }, 'request failed');
    return;
  }
  const code = (cause as { code?: unknown }).code;
  request.log.warn({ status: problem.status, detail: problem.detail, ...(typeof code === 'string' ? { code } : {}) }, 'request answered with a server-side problem');
}

/** `logName` is where a 500's detail sends the reader (the license server logs elsewhere). */
export function installProblemHandlers(app: FastifyInstance, logName = 'service.log'): void {
  app.setNotFoundHandler(async (request, reply) => {
    return sendProblem(reply, new ProblemError(404, `no route ${request.method} ${request.url.split('?')[0]}`));
  });

  app.setErrorHandler(async (error: FastifyError | ProblemError | Error, request, reply) => {
    if (error instanceof ProblemError) {
      logServerProblem(request, error, error);
      return sendProblem(reply, error);
    }
    if (isEngineError(error)) {
      const problem = engineProblem(error);
      logServerProblem(request, problem, error);
      return sendProblem(reply, problem);
    }
    const fastifyError = error as FastifyError;
    if (fastifyError.validation !== undefined) {
      const issues = fastifyError.validation as unknown as SchemaValidationIssue[];
      const query = request.query as Record<string, unknown> | undefined;
      return sendProblem(reply, validationProblem(fieldErrorsFromSchemaIssues(issues, fastifyError.validationContext, query)));
    }
    if (fastifyError.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      const sent = (request.headers['content-type'] ?? '(none)').slice(0, 200);
      return sendProblem(reply, new ProblemError(415, `request bodies must be JSON with Content-Type: application/json (got ${sent})`));
    }
    const status = fastifyError.statusCode;
    if (status !== undefined && status >= 400 && status < 500) {
      // Fastify's own client errors (bad JSON, wrong media type, body too large): their messages are safe.
      return sendProblem(reply, new ProblemError(status, error.message));
    }
    request.log.error({ err: error }, 'unexpected error');
    return sendProblem(reply, new ProblemError(500, `unexpected error (request ${request.id}); details are in ${logName}`));
  });
}
