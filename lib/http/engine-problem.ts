/**
 * Every engine error code, on every platform, maps to one problem document, so an engine failure that
 * escapes a route never surfaces as an anonymous 500. Codes come from the addon (errno names on Linux,
 * FWP_E_* / WIN32_* / HRESULT_* on Windows) and from the engine contract (ENGINE_DOWN, ADDON_MISSING...).
 */
import { EngineError } from '../engine/engine.js';
import { ProblemError } from './problem.js';
import { ENGINE_RETRY_AFTER_SECONDS } from '../services/rule-service.js';

/** The engine (or the part of it the request needs) is not there now; retrying later can succeed. */
const UNAVAILABLE = new Set([
  'ENGINE_DOWN', 'ADDON_MISSING', 'BFE_DOWN', 'BFE_DISABLED', 'DRIVER_MISSING', 'DRIVER_PROTOCOL',
  'FWP_E_SESSION_ABORTED',
]);
/** The request asks for something this engine cannot do or did not accept. */
const BAD_REQUEST = new Set(['UNSUPPORTED', 'EINVAL', 'ENOENT', 'ENOTDIR', 'ENAMETOOLONG', 'FWP_E_INVALID_PARAMETER']);
/** The engine's tables are full. */
const FULL = new Set(['ENOSPC', 'E2BIG', 'ENOMEM', 'FWP_E_TOO_MANY_SUBLAYERS']);

export function engineProblem(error: EngineError): ProblemError {
  const detail = `${error.code}: ${error.message}`;
  if (UNAVAILABLE.has(error.code)) {
    return new ProblemError(503, `the filtering engine is unavailable (${detail})`, {
      headers: { 'Retry-After': String(ENGINE_RETRY_AFTER_SECONDS) },
    });
  }
  if (BAD_REQUEST.has(error.code)) return new ProblemError(400, detail);
  if (FULL.has(error.code)) return new ProblemError(409, `the filtering engine has no room left (${detail})`);
  // EPERM, EACCES, FWP_E_*, WIN32_*, HRESULT_*, BPF_LOAD...: the service's fault or the OS's, not the client's.
  return new ProblemError(500, `the filtering engine failed (${detail}); details are in service.log`);
}

export function isEngineError(error: unknown): error is EngineError {
  return error instanceof EngineError;
}
