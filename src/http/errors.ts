// Maps storage failures to the HTTP status and message a client (or an operator reading a
// failed wget) can act on. A storage problem is never disguised as a missing package: only a
// blob that storage says does not exist becomes 404.

import type { StorageError } from '../storage/types.ts'

export interface HttpFailure {
  readonly statusCode: number
  readonly message: string
  readonly retryAfterSeconds?: number
}

export function storageFailure (err: StorageError, context: string): HttpFailure {
  switch (err.kind) {
    case 'not-found':
      return { statusCode: 404, message: `${err.message}, but the manifest names it for ${context}: upload the blob or fix packages.toml` }
    case 'denied':
      return {
        statusCode: 502,
        message: `storage refused this server's identity (${err.status ?? ''} ${err.code ?? ''}) reading ${context}: ` +
          'grant its identity the "Storage Blob Data Reader" role on the container, or check the SAS (expiry, read permission) or the connection string'
      }
    case 'timeout':
      return { statusCode: 504, message: `${err.message}, serving ${context}; try again later` }
    case 'unreachable':
      return { statusCode: 502, message: `storage is unreachable for ${context}: ${err.message}; check the storage endpoint and the node's network` }
    case 'throttled':
      // Nothing is wrong with our identity or the package: the client should come back later.
      return { statusCode: 503, message: `storage is busy serving ${context}: ${err.message}; try again later`, retryAfterSeconds: err.retryAfterSeconds ?? 5 }
    case 'changed':
      return { statusCode: 503, message: `${context} changed in storage while it was being read; try again`, retryAfterSeconds: 1 }
    default:
      return { statusCode: 502, message: `storage failed for ${context}: ${err.message}` }
  }
}
