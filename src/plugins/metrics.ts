// Wires the metrics registry into the app and counts every response by route and status.

import fp from 'fastify-plugin'
import { createMetrics } from '../http/metrics.ts'
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
  fastify.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched'
    m.requests.inc({ method: request.method, route, status: String(reply.statusCode) })
    m.requestDuration.observe({ route }, reply.elapsedTime / 1000)
  })
}, { name: 'metrics', fastify: '5.x' })
