// Wires the manifest cache: the first check at boot (a failure leaves the app up but not ready,
// retrying in the background), polling on an unref()ed timer, stopped when the app closes.

import fp from 'fastify-plugin'
import { createManifestCache } from '../manifest/cache.ts'
import type { ManifestCache } from '../manifest/cache.ts'

declare module 'fastify' {
  interface FastifyInstance {
    manifests: ManifestCache
  }
}

export interface ManifestPluginOptions {
  readonly manifestPath: string
  readonly pollIntervalSeconds: number
  readonly retryMinMs?: number
  readonly retryMaxMs?: number
  /** How long boot waits for the first check before going on not ready (default 10 s). */
  readonly bootWaitMs?: number
}

export default fp<ManifestPluginOptions>(async function manifest (fastify, opts) {
  const { metrics } = fastify
  const cache = createManifestCache({
    store: fastify.store,
    path: opts.manifestPath,
    pollIntervalSeconds: opts.pollIntervalSeconds,
    ...(opts.retryMinMs !== undefined && { retryMinMs: opts.retryMinMs }),
    ...(opts.retryMaxMs !== undefined && { retryMaxMs: opts.retryMaxMs }),
    log: fastify.log,
    onCheck (result, current) {
      metrics.manifestReloads.inc({ result })
      metrics.manifestLoaded.set(current === undefined ? 0 : 1)
      metrics.manifestEntries.set(current?.entryCount ?? 0)
    }
  })
  fastify.decorate('manifests', cache)
  fastify.addHook('onReady', async () => {
    // A stalled storage service must not hold the server down: after bootWaitMs the first check
    // goes on in the background and /readyz says not ready until it succeeds.
    let timer: NodeJS.Timeout | undefined
    const waited = new Promise<void>((resolve) => { timer = setTimeout(resolve, opts.bootWaitMs ?? 10_000) })
    await Promise.race([cache.start(), waited])
    clearTimeout(timer)
  })
  fastify.addHook('onClose', async () => { cache.stop() })
}, { name: 'manifest', fastify: '5.x', dependencies: ['storage', 'metrics'] })
