// Wires the metrics registry into the app and counts every response by route and status.

import fp from 'fastify-plugin'
import { createMetrics } from '../http/metrics.ts'
import type { Metrics } from '../http/metrics.ts'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

export default fp(async function metrics (fastify) {
  const m = createMetrics()
  fastify.decorate('metrics', m)
  fastify.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched'
    m.requests.inc({ method: request.method, route, status: String(reply.statusCode) })
    m.requestDuration.observe({ route }, reply.elapsedTime / 1000)
  })
}, { name: 'metrics', fastify: '5.x' })
