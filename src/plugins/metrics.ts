// Wires the metrics registry into the app and counts every request by route and status.

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
  // On the response's 'close', not onResponse: a response that never finished (the client left,
  // or a download was broken mid-body) is a request too, counted with status "aborted".
  fastify.addHook('onRequest', async (request, reply) => {
    let finished = false
    reply.raw.once('finish', () => { finished = true })
    reply.raw.once('close', () => {
      const route = request.routeOptions.url ?? 'unmatched'
      const status = finished ? String(reply.statusCode) : 'aborted'
      m.requests.inc({ method: request.method, route, status })
      m.requestDuration.observe({ route }, reply.elapsedTime / 1000)
    })
  })
}, { name: 'metrics', fastify: '5.x' })
