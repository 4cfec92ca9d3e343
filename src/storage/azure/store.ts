// Azure Blob Storage backend. Holds one ContainerClient (one credential, one keep-alive pipeline)
// for the life of the process; never creates clients or credentials per request. Every read is
// pinned to the ETag the caller looked up, so a blob overwritten mid-download fails the transfer
// instead of mixing two versions. Errors become StorageError kinds, never bare SDK errors.

import { RestError } from '@azure/storage-blob'
import type { ContainerClient } from '@azure/storage-blob'
import { Transform } from 'node:stream'
import type { Readable } from 'node:stream'
import { createBlobHttp } from './http.ts'
import type { ProxyTarget } from './proxy.ts'
import { Sha256Check } from '../sha256.ts'
import { MAX_TEXT_BYTES, StorageError } from '../types.ts'
import type { ReadOptions, TextRead, WritableStore } from '../types.ts'
import type { WireResponse } from './wire.ts'

export interface AzureStoreOptions {
  readonly container: ContainerClient
  /** Where and as whom, for logs (never a secret). */
  readonly description: string
  /** How often the SDK may resume a broken manifest read (downloads are not resumed: they break). */
  readonly maxRetryRequests?: number
  /**
   * Client-side bound on each storage request until its response headers arrive (the SDK's own
   * tryTimeoutInMs is only a server-side hint, so a silent socket would otherwise hang forever).
   */
  readonly requestTimeoutMs?: number
  /** A download that delivers nothing for this long while the client reads is broken (default 30 s). */
  readonly idleTimeoutMs?: number
  /** The proxy downloads go through (the SDK finds it on its own, by the same rules). */
  readonly proxy?: ProxyTarget | undefined
}

const unreachableCodes = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'EPIPE', 'REQUEST_SEND_ERROR'])

function suffixOf (status: number | undefined, code: string | undefined): string {
  if (code !== undefined) return ` (${status !== undefined ? `${status} ` : ''}${code})`
  return status !== undefined ? ` (${status})` : ''
}

/**
 * Classifies an answer (an HTTP status), whichever client received it. `fromStorage`: the answer
 * carries x-ms-request-id, which Azure Storage (and Azurite) always send; without it, a proxy or
 * firewall on the way answered, and its 401/403/407 says nothing about our identity.
 */
function answerError (status: number, code: string | undefined, message: string, what: string, cause: unknown, fromStorage: boolean): StorageError {
  const suffix = suffixOf(status, code)
  const details = { status, code, cause }
  if (status === 407) {
    return new StorageError('unreachable', `a proxy on the way to storage wants credentials for ${what} (407): give its user:password@ in HTTPS_PROXY`, details)
  }
  if (!fromStorage && (status === 401 || status === 403)) {
    return new StorageError('unreachable', `something on the way to storage (a proxy or firewall: the answer is not from Azure Storage) refused ${what}${suffix}`, details)
  }
  if (status === 404) {
    const what404 = code === 'ContainerNotFound' ? `the container holding ${what} does not exist` : `${what} does not exist`
    return new StorageError('not-found', `${what404}${suffix}`, details)
  }
  if (status === 401 || status === 403) return new StorageError('denied', `storage refused access to ${what}${suffix}`, details)
  if (status === 412) return new StorageError('changed', `${what} changed while it was being read${suffix}`, details)
  if (/timed? ?out/i.test(message)) return new StorageError('timeout', `storage did not answer in time for ${what}${suffix}`, details)
  return new StorageError('failed', `storage failed on ${what}: ${message.split('\n')[0] ?? ''}${suffix}`, details)
}

/** The StorageError for a raw response that is not the one asked for. */
function failure (res: WireResponse, what: string): StorageError {
  return answerError(res.status, res.headers['x-ms-error-code'], `HTTP ${res.status}`, what, undefined, res.headers['x-ms-request-id'] !== undefined)
}

/** Turns whatever the SDK or the network threw into a StorageError that says what happened to which blob. */
export function toStorageError (err: unknown, what: string): StorageError {
  if (err instanceof StorageError) return err
  const e = err as Partial<RestError> & Error & { details?: { errorCode?: string } }
  const status = typeof e.statusCode === 'number' ? e.statusCode : undefined
  const code = e.details?.errorCode ?? (typeof e.code === 'string' ? e.code : undefined)
  if (['CredentialUnavailableError', 'AuthenticationError', 'AggregateAuthenticationError'].includes(e.name)) {
    return new StorageError('denied', `no token for Azure Storage from this server's identity, for ${what}: ${e.message.split('\n')[0] ?? ''}`, { status, code, cause: err })
  }
  if (status !== undefined) {
    const requestId = (e.response?.headers as { get?: (name: string) => string | undefined } | undefined)?.get?.('x-ms-request-id')
    return answerError(status, code, e.message ?? '', what, err, requestId !== undefined)
  }
  const suffix = suffixOf(undefined, code)
  const details = { code, cause: err }
  if (e.name === 'AbortError' || code === 'ETIMEDOUT' || code === 'ESOCKETTIMEDOUT' || /timed? ?out/i.test(e.message ?? '')) {
    return new StorageError('timeout', `storage did not answer in time for ${what}${suffix}`, details)
  }
  if (code === undefined || unreachableCodes.has(code) || !(err instanceof RestError)) {
    return new StorageError('unreachable', `storage is unreachable for ${what}: ${e.message}${suffix}`, details)
  }
  return new StorageError('failed', `storage failed on ${what}: ${e.message.split('\n')[0] ?? ''}${suffix}`, details)
}

function isConditional (options: { ifNoneMatch?: string, ifMatch?: string }): boolean {
  return options.ifNoneMatch !== undefined || options.ifMatch !== undefined
}

export function createAzureStore (options: AzureStoreOptions): WritableStore {
  const { container } = options
  const maxRetryRequests = options.maxRetryRequests ?? 3
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000
  const idleTimeoutMs = options.idleTimeoutMs ?? 30_000

  /** Runs one SDK call with a signal that fires if no response arrives in time. */
  async function bounded<T> (what: string, call: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController()
    const timer = setTimeout(() => { controller.abort() }, requestTimeoutMs)
    try {
      return await call(controller.signal)
    } catch (err) {
      if (controller.signal.aborted) {
        throw new StorageError('timeout', `storage did not answer within ${requestTimeoutMs} ms for ${what}`, { cause: err })
      }
      throw err
    } finally {
      clearTimeout(timer)
    }
  }
  const name = (path: string): string => `blob "${path}" in container "${container.containerName}"`
  const http = createBlobHttp(container, { requestTimeoutMs, idleTimeoutMs, proxy: options.proxy })

  return {
    description: options.description,

    async stat (path) {
      try {
        const res = await http.send('HEAD', path, {}, name(path))
        if (res.status !== 200) throw failure(res, name(path))
        const size = Number(res.headers['content-length'])
        const etag = res.headers.etag
        if (etag === undefined || !Number.isSafeInteger(size)) {
          throw new StorageError('failed', `storage gave no ETag or length for ${name(path)}`)
        }
        const lastModified = res.headers['last-modified']
        const contentType = res.headers['content-type']
        return {
          size,
          etag,
          lastModified: lastModified !== undefined ? new Date(lastModified) : new Date(0),
          ...(contentType !== undefined && { contentType })
        }
      } catch (err) {
        throw toStorageError(err, name(path))
      }
    },

    async read (path, opts: ReadOptions): Promise<Readable> {
      const start = opts.start ?? 0
      const range = opts.end === undefined ? (start > 0 ? `bytes=${start}-` : undefined) : `bytes=${start}-${opts.end}`
      try {
        // Pinned: If-Match makes storage refuse (412) any other version of the blob.
        const res = await http.send('GET', path, { 'if-match': opts.etag, ...(range !== undefined && { 'x-ms-range': range }) },
          name(path), opts.sha256 !== undefined ? new Sha256Check(opts.sha256) : undefined)
        if (res.status !== 200 && res.status !== 206) {
          res.body?.destroy()
          throw failure(res, name(path))
        }
        if (res.body === undefined) throw new StorageError('failed', `storage sent ${name(path)} without a Content-Length`)
        return res.body
      } catch (err) {
        throw toStorageError(err, name(path))
      }
    },

    async readText (path, ifNoneMatch): Promise<TextRead> {
      try {
        // The manifest is small: the bound covers its body too.
        return await bounded(name(path), async (abortSignal): Promise<TextRead> => {
          const res = await container.getBlobClient(path).download(0, undefined, {
            ...(ifNoneMatch !== undefined && { conditions: { ifNoneMatch } }),
            maxRetryRequests,
            abortSignal
          })
          if (res._response.status === 304) return { changed: false }
          if ((res.contentLength ?? 0) > MAX_TEXT_BYTES) {
            throw new StorageError('too-large', `${name(path)} is ${res.contentLength ?? 0} bytes; the limit is ${MAX_TEXT_BYTES}`)
          }
          const body = res.readableStreamBody
          if (body === undefined || res.etag === undefined) throw new StorageError('failed', `storage sent no body or ETag for ${name(path)}`)
          const chunks: Buffer[] = []
          for await (const chunk of body) chunks.push(chunk as Buffer)
          return { changed: true, etag: res.etag, text: Buffer.concat(chunks).toString('utf8') }
        })
      } catch (err) {
        if ((err as RestError).statusCode === 304) return { changed: false }
        throw toStorageError(err, name(path))
      }
    },

    async writeText (path, text, ifMatch) {
      const body = Buffer.from(text)
      try {
        const res = await bounded(name(path), (abortSignal) => container.getBlockBlobClient(path).upload(body, body.length, {
          conditions: ifMatch === null ? { ifNoneMatch: '*' } : { ifMatch },
          blobHTTPHeaders: { blobContentType: 'application/toml; charset=utf-8' },
          abortSignal
        }))
        if (res.etag === undefined) throw new StorageError('failed', `storage gave no ETag for ${name(path)}`)
        return res.etag
      } catch (err) {
        // If-None-Match: * on an existing blob is 409 BlobAlreadyExists: someone wrote first.
        if ((err as RestError).statusCode === 409) throw new StorageError('changed', `${name(path)} was created by someone else since it was read`, { status: 409, cause: err })
        throw toStorageError(err, name(path))
      }
    },

    async upload (path, data, options = {}) {
      let size = 0
      const counted = data.pipe(new Transform({
        transform (chunk: Buffer, _encoding, callback) { size += chunk.length; callback(null, chunk) }
      }))
      data.once('error', (err) => counted.destroy(err))
      try {
        // Blocks of 4 MiB, 4 in flight: memory stays near 16 MiB whatever the file's size. The
        // condition applies to the commit: the blob appears whole, or not at all.
        const conditions = options.ifNoneMatch !== undefined ? { ifNoneMatch: options.ifNoneMatch } : options.ifMatch !== undefined ? { ifMatch: options.ifMatch } : undefined
        const res = await container.getBlockBlobClient(path).uploadStream(counted, 4 * 1024 * 1024, 4, {
          ...(options.contentType !== undefined && { blobHTTPHeaders: { blobContentType: options.contentType } }),
          ...(options.onProgress !== undefined && { onProgress: (p: { loadedBytes: number }) => options.onProgress?.(p.loadedBytes) }),
          ...(conditions !== undefined && { conditions })
        })
        if (res.etag === undefined) throw new StorageError('failed', `storage gave no ETag for ${name(path)}`)
        return { size, etag: res.etag, lastModified: res.lastModified ?? new Date() }
      } catch (err) {
        // A failed If-None-Match: * is 409 BlobAlreadyExists; a failed If-Match is 412.
        const status = (err as RestError).statusCode
        if (isConditional(options) && (status === 409 || status === 412)) {
          throw new StorageError('changed', `${name(path)} ${options.ifNoneMatch !== undefined ? 'already exists' : 'is no longer the version expected'}`, { status, cause: err })
        }
        throw toStorageError(err, name(path))
      }
    },

    async createContainer () {
      try {
        return (await bounded(`container "${container.containerName}"`, (abortSignal) => container.createIfNotExists({ abortSignal }))).succeeded
      } catch (err) {
        throw toStorageError(err, `container "${container.containerName}"`)
      }
    },

    async remove (path, ifMatch) {
      try {
        await bounded(name(path), (abortSignal) => container.getBlobClient(path).deleteIfExists({ conditions: { ifMatch }, abortSignal }))
      } catch (err) {
        throw toStorageError(err, name(path))
      }
    },

    async close () { http.close() }
  }
}
