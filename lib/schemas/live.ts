/** Schemas of the live views: /throughput, /connections, /apps. */
import Type, { type Static } from 'typebox';
import { QuotaSchema } from './quota.js';
import { RuleSchema } from './rule.js';

export const THROUGHPUT_WINDOW_DEFAULT = 60;
export const THROUGHPUT_WINDOW_MAX = 3600;

// A string, parsed by the route: the 400 then names `window` with a sentence, whatever the client sent.
export const ThroughputQuerySchema = Type.Object({ window: Type.Optional(Type.String()) });

export const ThroughputSampleSchema = Type.Object({
  ts: Type.String(),
  up_bytes: Type.Integer(),
  down_bytes: Type.Integer(),
});

export const ThroughputSchema = Type.Object({
  window: Type.Integer(),
  interval_ms: Type.Integer(),
  samples: Type.Array(ThroughputSampleSchema),
});
export type Throughput = Static<typeof ThroughputSchema>;

export const ConnectionSchema = Type.Object({
  protocol: Type.String(),
  local_address: Type.String(),
  local_port: Type.Integer(),
  remote_address: Type.String(),
  remote_port: Type.Integer(),
  state: Type.String(),
  pid: Type.Integer(),
  app_path: Type.String(),
});
export const ConnectionListSchema = Type.Array(ConnectionSchema);

const appProperties = {
  pid: Type.Integer(),
  name: Type.String(),
  path: Type.String(),
  bytes_up: Type.Integer(),
  bytes_down: Type.Integer(),
  rate_up: Type.Integer(),
  rate_down: Type.Integer(),
  connections: Type.Integer(),
  rule_id: Type.Union([Type.Null(), Type.String()]),
  blocked: Type.Boolean(),
};
export const AppSchema = Type.Object(appProperties);
export const AppListSchema = Type.Array(AppSchema);

/** `connections` stays the count (as in the list); the sockets themselves are `connection_list`. */
export const AppDetailSchema = Type.Object({
  ...appProperties,
  connection_list: ConnectionListSchema,
  rules: Type.Array(RuleSchema),
  quotas: Type.Array(QuotaSchema),
});

export const AppPidParamsSchema = Type.Object({ pid: Type.String() });
