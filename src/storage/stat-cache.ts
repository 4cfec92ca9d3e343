// Remembers blob properties for a short time, so a burst of downloads of one package costs one
// properties request instead of one each. Safe for the bytes: every read stays pinned to the
// ETag, so a blob replaced within the TTL fails the pinned read ("changed"), which drops the
// entry, and the route looks the blob up again. Only HEAD answers may be up to `ttlMs` old.

import { isStorageError } from './types.ts'
import type { BlobProperties, BlobStore } from './types.ts'

export function withStatCache (store: BlobStore, ttlMs: number, maxEntries = 1024): BlobStore {
  if (ttlMs <= 0) return store
  const cache = new Map<string, { props: BlobProperties, until: number }>()
  return {
    description: store.description,
    async stat (path) {
      const hit = cache.get(path)
      if (hit !== undefined && hit.until > Date.now()) return hit.props
      const props = await store.stat(path)
      if (cache.size >= maxEntries) cache.clear()
      cache.set(path, { props, until: Date.now() + ttlMs })
      return props
    },
    async read (path, options) {
      try {
        return await store.read(path, options)
      } catch (err) {
        if (isStorageError(err) && (err.kind === 'changed' || err.kind === 'not-found')) cache.delete(path)
        throw err
      }
    },
    readText: (path, ifNoneMatch) => store.readText(path, ifNoneMatch),
    async writeText (path, text, ifMatch) {
      cache.delete(path)
      return await store.writeText(path, text, ifMatch)
    },
    async upload (path, data, options) {
      cache.delete(path)
      return await store.upload(path, data, options)
    },
    close: () => store.close()
  }
}
