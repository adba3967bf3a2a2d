import { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';

/**
 * One info line per request instead of Fastify's two: "request completed" carries the method, path,
 * status and time, and "incoming request" is logged at debug. Each line costs the event loop about
 * 15 µs under load (`npm run bench -- --log-level warn` against the default), which is time every
 * other delivery waits for.
 */
/** What a route says of a request it handled, written on the request's one line (see below). */
interface Outcome {
  msg: string;
  fields: Record<string, unknown>;
  level: 'info' | 'warn' | 'error';
}
const outcomes = new WeakMap<FastifyRequest, Outcome>();
/** Requests whose line was written, throttled, elsewhere (throttled-log.ts): a flood costs no line each. */
const quiet = new WeakSet<FastifyRequest>();

/**
 * Names the outcome of a request for its one line: `msg` replaces "request completed" and the
 * fields join the method, path, status and time. A stored delivery then costs one line, not two;
 * a refused one too (at `level`).
 */
export function logOutcome(request: FastifyRequest, msg: string, fields: Record<string, unknown>, level: Outcome['level'] = 'info'): void {
  outcomes.set(request, { msg, fields, level });
}

/** This request gets no line of its own: its failure was logged, throttled, by whoever called this. */
export function logQuietly(request: FastifyRequest): void {
  quiet.add(request);
}

export class OneLinePerRequest extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    if (!this.isLogDisabled(request)) request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (this.isLogDisabled(request) || (quiet.has(request) && !error)) return;
    const fields = { req: request, res: reply, responseTime: reply.elapsedTime };
    const outcome = outcomes.get(request);
    if (error) reply.log.error({ ...fields, ...outcome?.fields, err: error }, 'request errored');
    else reply.log[outcome?.level ?? 'info']({ ...fields, ...outcome?.fields }, outcome?.msg ?? 'request completed');
  }
}

/**
 * A request whose client hung up before the answer gets no "request completed" line; without the
 * info-level "incoming request" line it would leave no trace at info, so it gets a line of its own.
 */
export function logAbortedRequests(app: FastifyInstance): void {
  app.addHook('onRequestAbort', async (request) => {
    request.log.info({ req: request }, 'request aborted: the client closed the connection before the answer');
  });
}
