// Wires the metrics registry into the app and counts every request by route and status.

import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { createMetrics, whenEnded } from '../http/metrics.ts'
import type { Metrics } from '../http/metrics.ts'
import type { StorageStats } from '../storage/types.ts'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

export interface MetricsPluginOptions {
  /** The storage backend's counters, where it keeps them. */
  readonly stats?: StorageStats | undefined
}

export default fp<MetricsPluginOptions>(async function metrics (fastify, opts) {
  const m = createMetrics(opts.stats)
  fastify.decorate('metrics', m)
  fastify.addHook('onRequest', async (request, reply) => { countRequest(m, request, reply) })
}, { name: 'metrics', fastify: '5.x' })

/**
 * Counts a request when its response is over, not onResponse: one that never finished (the client
 * left, or a download was broken mid-body) is a request too, with status "aborted". For what the
 * router refuses before any hook runs, app.ts's frameworkErrors calls it itself.
 */
export function countRequest (m: Metrics, request: FastifyRequest, reply: FastifyReply): void {
  whenEnded(reply.raw, (finished) => {
    const route = request.routeOptions.url ?? 'unmatched'
    m.requests.inc({ method: request.method, route, status: finished ? String(reply.statusCode) : 'aborted' })
    m.requestDuration.observe({ route }, reply.elapsedTime / 1000)
  })
}
