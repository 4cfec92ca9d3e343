// The one small interface every storage backend satisfies (Azure Blob, a local directory).
// Nothing here knows about Fastify or HTTP: backends report failures as StorageError kinds,
// and the routes decide which status each kind becomes. A backend must never buffer a blob.

import type { Readable } from 'node:stream'

export interface BlobProperties {
  readonly size: number
  /** Strong, quoted entity tag identifying this version of the blob. */
  readonly etag: string
  readonly lastModified: Date
  /** The content type stored with the blob, when the backend keeps one. */
  readonly contentType?: string
}

export interface ReadOptions {
  /** The version to read: a read fails with kind "changed" once the blob is another version. */
  readonly etag: string
  /** First byte, inclusive (default 0). */
  readonly start?: number
  /** Last byte, inclusive (default: the end of the blob). */
  readonly end?: number
  /**
   * The whole blob's expected sha256 (hex), for a read of all of it: the stream fails with an
   * IntegrityError instead of delivering its last bytes if they hash to anything else.
   */
  readonly sha256?: string
  /** The blob's size as looked up: an answer that says otherwise fails the read. */
  readonly size?: number
}

/** What a read may ask of a blob not looked up first: a range as storage serves it, and a check. */
export interface OpenOptions {
  /** First byte, inclusive (default 0). */
  readonly start?: number
  /** Last byte, inclusive (default: the end of the blob); storage ends it at the blob's end. */
  readonly end?: number
  /** As ReadOptions.sha256 (only for a read of the whole blob). */
  readonly sha256?: string
}

/** A blob read without a lookup first: the properties come from the read's own answer. */
export interface OpenedBlob {
  readonly props: BlobProperties
  /** The bytes the body carries: start to end inclusive (end is start - 1 for none). */
  readonly start: number
  readonly end: number
  readonly body: Readable
}

export type TextRead =
  | { readonly changed: false }
  | { readonly changed: true, readonly etag: string, readonly text: string }

/** What a backend counts of its work, read when metrics are scraped. */
export interface StorageStats {
  /** Requests sent to storage for downloads (retries and resumes included). */
  requests: number
  /** Download bytes received from storage (read ahead or not, delivered or not). */
  bytesRead: number
  /** Memory held by parallel reads ahead of their clients, process-wide. */
  readonly readAheadBytes: number
}

export interface BlobStore {
  /** Where the blobs come from, for logs (never a secret). */
  readonly description: string
  /** The backend's counters, where it keeps them. */
  readonly stats?: StorageStats
  stat (path: string): Promise<BlobProperties>
  read (path: string, options: ReadOptions): Promise<Readable>
  /**
   * One request for properties and bytes together (a backend without it is looked up, then read).
   * A range that starts past the blob's end fails with status 416.
   */
  open? (path: string, options: OpenOptions): Promise<OpenedBlob>
  /** Reads a small text blob unless its ETag still equals `ifNoneMatch` (one conditional request). */
  readText (path: string, ifNoneMatch?: string): Promise<TextRead>
  /**
   * Writes a small text blob only if it is still the version read (`ifMatch`), or does not exist
   * yet (`ifMatch: null`); otherwise fails with kind "changed". Returns the new ETag.
   */
  writeText (path: string, text: string, ifMatch: string | null): Promise<string>
  /**
   * Streams a blob in (any size, bounded memory). Without a condition it replaces any earlier
   * version; `ifNoneMatch: '*'` creates it only if it does not exist, `ifMatch` replaces only that
   * version; a failed condition is kind "changed". Returns the properties of the version written
   * (not of whatever is there by the time it returns).
   */
  upload (path: string, data: Readable, options?: UploadOptions): Promise<BlobProperties>
  close (): Promise<void>
}

/** What `publish` needs beyond serving: a container to create and a blob to take back. */
export interface WritableStore extends BlobStore {
  /** Creates the container unless it exists; true when this call created it. */
  createContainer (): Promise<boolean>
  /** Deletes a blob only while it is still the version `ifMatch`; a missing blob is not an error. */
  remove (path: string, ifMatch: string): Promise<void>
}

export interface UploadOptions {
  readonly contentType?: string
  /** Called with the bytes sent so far. */
  readonly onProgress?: (bytes: number) => void
  /** '*': create only, never replace an existing blob. */
  readonly ifNoneMatch?: '*'
  /** Replace only this version of the blob. */
  readonly ifMatch?: string
}

export type StorageErrorKind =
  | 'not-found' // the blob (or the container) does not exist
  | 'denied' // the storage service refused our identity (401/403)
  | 'unreachable' // no connection could be made, or it broke
  | 'timeout' // the storage service did not answer in time
  | 'changed' // the blob is no longer the version asked for
  | 'too-large' // a text read over its limit
  | 'throttled' // storage kept saying "busy" (or kept resetting) until the time allowed ran out
  | 'failed' // any other answer from the storage service

export class StorageError extends Error {
  readonly kind: StorageErrorKind
  /** The storage service's HTTP status, when it answered. */
  readonly status?: number
  /** The storage service's error code (e.g. AuthorizationPermissionMismatch), when it gave one. */
  readonly code?: string
  /** For "throttled": when the client may try again (storage's Retry-After, else ours). */
  readonly retryAfterSeconds?: number

  constructor (kind: StorageErrorKind, message: string, details: { status?: number, code?: string, cause?: unknown, retryAfterSeconds?: number } = {}) {
    super(message, { cause: details.cause })
    this.name = 'StorageError'
    this.kind = kind
    if (details.status !== undefined) this.status = details.status
    if (details.code !== undefined) this.code = details.code
    if (details.retryAfterSeconds !== undefined) this.retryAfterSeconds = details.retryAfterSeconds
  }
}

export function isStorageError (err: unknown): err is StorageError {
  return err instanceof StorageError
}

/** The most a manifest may weigh; a larger one is refused rather than held in memory. */
export const MAX_TEXT_BYTES = 4 * 1024 * 1024
