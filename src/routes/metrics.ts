// Prometheus exposition of the app's own registry.

import type { FastifyPluginAsync } from 'fastify'

const metrics: FastifyPluginAsync = async function metrics (fastify) {
  fastify.get('/metrics', async (_request, reply) => {
    const { registry } = fastify.metrics
    reply.type(registry.contentType)
    return registry.metrics()
  })
}

export default metrics
