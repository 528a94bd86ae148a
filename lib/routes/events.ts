import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { EventStreamHub } from '../services/event-stream.js';

export interface EventRouteOptions {
  hub: EventStreamHub;
}

/** A Last-Event-ID we issued is a non-negative integer; anything else is ignored (a fresh subscription). */
function parseLastEventId(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || !/^\d{1,15}$/.test(value.trim())) return undefined;
  return Number(value.trim());
}

const eventRoutes: FastifyPluginAsyncTypebox<EventRouteOptions> = async (app, options) => {
  app.get('/events', {
    schema: {
      summary: 'Server-Sent Events: quota, rule sync, engine, config, license and group events',
      description: 'Each event has `id:` (increasing integer), `event:` (its name) and one JSON `data:` line. ' +
        'A `: hb` comment is sent every [events] heartbeat_sec. Send `Last-Event-ID` to be replayed what ' +
        'you missed; if that id is no longer buffered, everything buffered is replayed after a ' +
        '`: replay-incomplete` comment.',
      produces: ['text/event-stream'],
    },
  }, async (request, reply) => {
    reply.hijack();
    options.hub.attach(reply.raw, parseLastEventId(request.headers['last-event-id']));
  });
};

export default eventRoutes;
