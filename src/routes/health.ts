// Liveness and readiness. /healthz answers while the process can answer at all; /readyz says
// whether packages can be served (a manifest is loaded) and why not, for kubectl and humans.

import type { FastifyPluginAsync } from 'fastify'

const health: FastifyPluginAsync = async function health (fastify) {
  fastify.get('/healthz', async () => ({ status: 'ok' }))

  fastify.get('/readyz', async (_request, reply) => {
    const manifest = fastify.manifests.status()
    reply.code(manifest.ready ? 200 : 503)
    if (!manifest.ready) reply.header('retry-after', '5')
    return { ready: manifest.ready, storage: fastify.store.description, manifest }
  })
}

export default health
