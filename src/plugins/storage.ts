// Decorates the app with the BlobStore its owner opened, and closes it with the app.

import fp from 'fastify-plugin'
import type { BlobStore } from '../storage/types.ts'

declare module 'fastify' {
  interface FastifyInstance {
    store: BlobStore
  }
}

export interface StoragePluginOptions {
  readonly store: BlobStore
}

export default fp<StoragePluginOptions>(async function storage (fastify, opts) {
  fastify.decorate('store', opts.store)
  fastify.addHook('onClose', async () => { await opts.store.close() })
}, { name: 'storage', fastify: '5.x' })
