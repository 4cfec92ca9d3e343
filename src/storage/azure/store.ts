// Azure Blob Storage backend. Holds one ContainerClient (one credential; the SDK's pipeline for
// the manifest, publishing) and one undici dispatcher (http.ts) for downloads, for the life of the
// process; never creates clients or credentials per request. Every storage answer is checked
// against what was asked before a byte of it is passed on (status, Content-Length,
// Content-Range, ETag); throttling and resets before any byte are retried with backoff within
// the storage timeout; a body that breaks is resumed from its next byte, pinned to its ETag, so a
// download never mixes two versions and never ends short looking complete. Errors become
// StorageError kinds, never bare SDK or undici errors.

import { RestError } from '@azure/storage-blob'
import type { ContainerClient } from '@azure/storage-blob'
import { Transform } from 'node:stream'
import type { Readable } from 'node:stream'
import { createBlobHttp } from './http.ts'
import type { BlobResponse, BodySource } from './http.ts'
import type { ProxyTarget } from './proxy.ts'
import { ResumableBody } from './body.ts'
import { parallelRead } from '../parallel-read.ts'
import type { ReadAheadBudget } from '../parallel-read.ts'
import { Sha256Check } from '../sha256.ts'
import { MAX_TEXT_BYTES, StorageError } from '../types.ts'
import type { BlobProperties, OpenedBlob, ReadOptions, StorageStats, TextRead, WritableStore } from '../types.ts'
import { backoffDelay, wait } from '../../lib/backoff.ts'
import type { Backoff } from '../../lib/backoff.ts'
import { errnoCode, messageOf } from '../../lib/errors.ts'

export interface AzureStoreOptions {
  readonly container: ContainerClient
  /** Where and as whom, for logs (never a secret). */
  readonly description: string
  /** How often the SDK may resume a broken manifest read (downloads are not resumed: they break). */
  readonly maxRetryRequests?: number
  /**
   * Client-side bound (default 30 s) on each storage request until its response headers arrive,
   * retries of throttled requests included (the SDK's own tryTimeoutInMs is only a server-side
   * hint, so a silent socket would otherwise hang forever), and on a resumed body's reopening.
   */
  readonly requestTimeoutMs?: number
  /** A download that delivers nothing for this long while the client reads breaks (default: requestTimeoutMs). */
  readonly idleTimeoutMs?: number
  /** The proxy downloads go through (the SDK finds it on its own, by the same rules). */
  readonly proxy?: ProxyTarget | undefined
  /** Certificates to trust for downloads besides the system's (tests). */
  readonly ca?: string | Buffer | undefined
  /** Waits between retries of throttled requests and resumes of broken bodies. */
  readonly backoff?: Backoff
  /** How often a broken body is reopened without a byte in between before the download breaks (default 3). */
  readonly maxResumes?: number
  /**
   * Large reads over several connections at once (parallel-read.ts): a read of at least two
   * chunks is split into `chunkBytes` ranges, up to `connections` in flight, read ahead into the
   * process's `budget`. Undefined, or one connection: every read is one request.
   */
  readonly parallel?: { readonly connections: number, readonly chunkBytes: number, readonly budget: ReadAheadBudget, readonly minSpeedup?: number | undefined } | undefined
}

/** Storage said "busy" (or "try again"): SPEC's throttling and transient failures. */
function transient (res: BlobResponse): boolean {
  if (res.status === 429 || res.status === 503) return true
  const code = res.headers['x-ms-error-code']
  return res.status === 500 && (code === 'OperationTimedOut' || code === 'InternalError')
}

/** A connection that broke before any answer: the request may be sent again. */
const resetCodes = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET'])
const timeoutCodes = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT'])

/** Retry-After (seconds or an HTTP date) in milliseconds. */
function retryAfterMs (value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const seconds = Number(value)
  if (value.trim() !== '' && Number.isFinite(seconds) && seconds >= 0) return seconds * 1000
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now())
}

/** What a read asks for: the bytes and, when looked up already, the version and size. */
interface Ask {
  readonly start: number
  /** Inclusive; undefined: to the end of the blob. */
  readonly end?: number | undefined
  readonly etag?: string | undefined
  readonly size?: number | undefined
}

/** What the answer carries, once checked against the ask. */
interface Span {
  readonly start: number
  readonly end: number
  readonly size: number
  readonly etag: string
}

const RETRY_AFTER_SECONDS = 5

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
function failure (res: BlobResponse, what: string): StorageError {
  return answerError(res.status, res.headers['x-ms-error-code'], `HTTP ${res.status}`, what, undefined, res.headers['x-ms-request-id'] !== undefined)
}

/** Checks a GET's answer against what was asked; throws (the transfer fails) on any difference. */
function checkAnswer (res: BlobResponse, ask: Ask, what: string): Span {
  const wrong = (why: string): StorageError =>
    new StorageError('failed', `storage's answer for ${what} is not the one asked for: ${why}`, { status: res.status })
  const ranged = ask.start > 0 || ask.end !== undefined
  const etag = res.headers.etag
  if (etag === undefined || etag === '') throw wrong('no ETag')
  if (ask.etag !== undefined && etag !== ask.etag) throw wrong(`ETag ${etag}, not the ${ask.etag} asked for`)
  const lengthHeader = res.headers['content-length']
  if (lengthHeader === undefined || !/^\d+$/.test(lengthHeader)) throw wrong('no Content-Length')
  const length = Number(lengthHeader)
  if (!ranged) {
    if (res.status !== 200) throw wrong(`status ${res.status} to a read of the whole blob`)
    if (ask.size !== undefined && length !== ask.size) throw wrong(`${length} bytes announced for a blob of ${ask.size}`)
    return { start: 0, end: length - 1, size: length, etag }
  }
  // A range that starts at or past the end is unsatisfiable (416, as Azure answers), whatever the
  // status: Azurite answers one on an empty blob with 206 "bytes 0--1/0".
  const total = /\/(\d+)$/.exec(res.headers['content-range'] ?? '')?.[1]
  if (total !== undefined && ask.start >= Number(total)) {
    throw new StorageError('failed', `bytes ${ask.start}-${ask.end ?? ''} of ${what} are past its end (${total} bytes)`, { status: 416 })
  }
  if (res.status !== 206) throw wrong(`status ${res.status} to a ranged read (bytes ${ask.start}-${ask.end ?? ''})`)
  const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers['content-range'] ?? '')
  if (range === null) throw wrong(`Content-Range ${JSON.stringify(res.headers['content-range'] ?? '')}`)
  const [first, last, size] = [Number(range[1]), Number(range[2]), Number(range[3])]
  if (ask.size !== undefined && size !== ask.size) throw wrong(`a blob of ${size} bytes, not ${ask.size}`)
  const end = Math.min(ask.end ?? size - 1, size - 1)
  if (first !== ask.start || last !== end) throw wrong(`bytes ${first}-${last}/${size} for bytes ${ask.start}-${end}`)
  if (length !== last - first + 1) throw wrong(`${length} bytes announced for bytes ${first}-${last}`)
  return { start: first, end: last, size, etag }
}

function propertiesOf (res: BlobResponse, size: number, etag: string): BlobProperties {
  const lastModified = res.headers['last-modified']
  const contentType = res.headers['content-type']
  return {
    size,
    etag,
    lastModified: lastModified !== undefined ? new Date(lastModified) : new Date(0),
    ...(contentType !== undefined && { contentType })
  }
}

/** Turns whatever the SDK or the network threw into a StorageError that says what happened to which blob. */
export function toStorageError (err: unknown, what: string): StorageError {
  if (err instanceof StorageError) return err
  const e = err instanceof Error ? err : new Error(String(err))
  const rest = err instanceof RestError ? err : undefined
  const status = rest?.statusCode
  const sdkDetails: unknown = rest?.details
  const code = (typeof sdkDetails === 'object' && sdkDetails !== null && 'errorCode' in sdkDetails && typeof sdkDetails.errorCode === 'string' ? sdkDetails.errorCode : undefined) ?? errnoCode(err)
  if (['CredentialUnavailableError', 'AuthenticationError', 'AggregateAuthenticationError'].includes(e.name)) {
    return new StorageError('denied', `no token for Azure Storage from this server's identity, for ${what}: ${e.message.split('\n')[0] ?? ''}`, { status, code, cause: err })
  }
  if (status !== undefined) {
    const requestId = rest?.response?.headers.get('x-ms-request-id')
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

/** The HTTP status of an SDK error, if it carries one. */
function statusOf (err: unknown): number | undefined {
  return err instanceof RestError ? err.statusCode : undefined
}

function isConditional (options: { ifNoneMatch?: string, ifMatch?: string }): boolean {
  return options.ifNoneMatch !== undefined || options.ifMatch !== undefined
}

export function createAzureStore (options: AzureStoreOptions): WritableStore {
  const { container } = options
  const maxRetryRequests = options.maxRetryRequests ?? 3
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000
  const idleTimeoutMs = options.idleTimeoutMs ?? requestTimeoutMs
  const backoff = options.backoff ?? { initialMs: 100, maxMs: 5_000, jitter: 0.5 }
  const maxResumes = options.maxResumes ?? 3

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
  const parallel = options.parallel !== undefined && options.parallel.connections > 1 ? options.parallel : undefined
  const stats: StorageStats = {
    requests: 0,
    bytesRead: 0,
    get readAheadBytes () { return parallel?.budget.inUse ?? 0 }
  }
  const name = (path: string): string => `blob "${path}" in container "${container.containerName}"`
  const http = createBlobHttp(container, { timeoutMs: idleTimeoutMs, proxy: options.proxy, ca: options.ca })

  function classify (err: unknown, what: string): StorageError {
    if (err instanceof StorageError) return err
    const code = errnoCode(err)
    if (code !== undefined && timeoutCodes.has(code)) {
      return new StorageError('timeout', `storage did not answer within ${requestTimeoutMs} ms for ${what}`, { code, cause: err })
    }
    const proxyStatus = /^Proxy response \((\d+)\)/.exec(messageOf(err))?.[1]
    if (proxyStatus !== undefined && options.proxy !== undefined) {
      // Not storage refusing our identity: the way to storage is closed.
      const why = proxyStatus === '407' ? 'HTTP 407: give the proxy\'s user:password@ in HTTPS_PROXY' : `HTTP ${proxyStatus}`
      return new StorageError('unreachable', `proxy ${options.proxy.shown} refused a tunnel to storage for ${what} (${why})`, { status: Number(proxyStatus), cause: err })
    }
    return toStorageError(err, what)
  }

  /**
   * One request, sent again while storage throttles or resets the connection before answering:
   * backoff with jitter, at least storage's Retry-After, all within requestTimeoutMs.
   */
  async function exchange (method: 'GET' | 'HEAD', path: string, headers: Record<string, string>, what: string, deadline = Date.now() + requestTimeoutMs): Promise<BlobResponse> {
    for (let attempt = 0; ; attempt++) {
      let res: BlobResponse | undefined
      let why = ''
      if (Date.now() >= deadline) throw new StorageError('timeout', `storage did not answer within ${requestTimeoutMs} ms for ${what}`)
      let hintMs: number | undefined
      let details: { status?: number, code?: string, cause?: unknown } = {}
      try {
        stats.requests++
        res = await http.send(method, path, headers, deadline - Date.now())
      } catch (err) {
        const code = errnoCode(err)
        if (code === undefined || !resetCodes.has(code)) throw classify(err, what)
        why = `storage kept closing the connection before answering (${code})`
        details = { code, cause: err }
      }
      if (res !== undefined) {
        if (!transient(res)) return res
        res.body.on('error', () => {}).resume()
        const code = res.headers['x-ms-error-code']
        hintMs = retryAfterMs(res.headers['retry-after'])
        why = `storage is busy (${res.status}${code !== undefined ? ` ${code}` : ''})`
        details = { status: res.status, ...(code !== undefined && { code }) }
      }
      const delay = Math.max(backoffDelay(backoff, attempt), hintMs ?? 0)
      // Give up while there is still time to answer within the bound; the client retries later.
      if (Date.now() + delay + Math.min(1000, requestTimeoutMs / 4) > deadline) {
        const retryAfterSeconds = Math.max(1, Math.ceil((hintMs ?? RETRY_AFTER_SECONDS * 1000) / 1000))
        throw new StorageError('throttled', `${why} for ${what}, after ${attempt + 1} tries in ${requestTimeoutMs} ms`, { ...details, retryAfterSeconds })
      }
      await wait(delay)
    }
  }

  /** A GET for `ask`, its answer checked; a failed one never hands over its body. */
  async function get (path: string, ask: Ask, deadline?: number): Promise<{ res: BlobResponse, span: Span }> {
    const what = name(path)
    const ranged = ask.start > 0 || ask.end !== undefined
    const res = await exchange('GET', path, {
      // Pinned: If-Match makes storage refuse (412) any other version of the blob.
      ...(ask.etag !== undefined && { 'if-match': ask.etag }),
      ...(ranged && { 'x-ms-range': `bytes=${ask.start}-${ask.end ?? ''}` })
    }, what, deadline)
    if (res.status !== 200 && res.status !== 206) {
      res.body.on('error', () => {}).resume()
      throw failure(res, what)
    }
    try {
      return { res, span: checkAnswer(res, ask, what) }
    } catch (err) {
      res.body.on('error', () => {}).destroy()
      throw err
    }
  }

  /**
   * Bytes start..end of a checked answer's version, from `source`, resumed from the next byte
   * (a ranged read pinned to the ETag, never past `end`) if storage breaks it.
   */
  function resumable (path: string, source: BodySource, start: number, end: number, span: Span, sha256: string | undefined): Readable {
    return new ResumableBody(source, {
      what: name(path),
      start,
      end,
      check: sha256 !== undefined ? new Sha256Check(sha256) : undefined,
      backoff,
      maxResumes,
      resumeWithinMs: requestTimeoutMs,
      onBytes: (n) => { stats.bytesRead += n },
      reopen: async (from, deadline) => {
        const again = await get(path, { start: from, end, etag: span.etag, size: span.size }, deadline)
        return again.res.body
      }
    })
  }

  /**
   * The body of a checked answer: as it comes (a ResumableBody), or, for a span of two chunks
   * or more, read in parallel ranges pinned to the answer's ETag (parallelRead), the answer's own
   * body serving the first chunk. parallelRead reads a broken chunk on from its next byte itself
   * and checks the sha256 (a whole read) over the reassembled bytes, in order. A range still
   * waiting for its headers when the client leaves is dropped once they arrive (not aborted).
   */
  function download (path: string, res: BlobResponse, span: Span, sha256: string | undefined): Readable {
    const length = span.end - span.start + 1
    if (parallel === undefined || length < 2 * parallel.chunkBytes) return resumable(path, res.body, span.start, span.end, span, sha256)
    return parallelRead({
      start: span.start,
      end: span.end,
      chunkBytes: parallel.chunkBytes,
      connections: parallel.connections,
      budget: parallel.budget,
      minSpeedup: parallel.minSpeedup,
      first: res.body,
      // Pinned and checked like any read (get); a chunk's break is read on from its next byte.
      readRange: async (start, end) => (await get(path, { start, end, etag: span.etag, size: span.size })).res.body,
      retryable: (err) => !(err instanceof StorageError) || err.kind === 'unreachable' || err.kind === 'timeout' || err.kind === 'throttled',
      attempts: maxResumes + 1,
      resumeWithinMs: requestTimeoutMs,
      check: sha256 !== undefined ? new Sha256Check(sha256) : undefined,
      onBytes: (n) => { stats.bytesRead += n }
    })
  }

  return {
    description: options.description,
    stats,

    async stat (path) {
      const what = name(path)
      try {
        const res = await exchange('HEAD', path, {}, what)
        res.body.on('error', () => {}).resume()
        if (res.status !== 200) throw failure(res, what)
        const size = Number(res.headers['content-length'])
        const etag = res.headers.etag
        if (etag === undefined || !Number.isSafeInteger(size)) {
          throw new StorageError('failed', `storage gave no ETag or length for ${what}`)
        }
        return propertiesOf(res, size, etag)
      } catch (err) {
        throw classify(err, what)
      }
    },

    async read (path, opts: ReadOptions): Promise<Readable> {
      try {
        const { res, span } = await get(path, { start: opts.start ?? 0, end: opts.end, etag: opts.etag, size: opts.size })
        return download(path, res, span, opts.sha256)
      } catch (err) {
        throw classify(err, name(path))
      }
    },

    async open (path, opts): Promise<OpenedBlob> {
      try {
        const ask = { start: opts.start ?? 0, end: opts.end }
        const { res, span } = await get(path, ask)
        const whole = ask.start === 0 && ask.end === undefined
        return {
          props: propertiesOf(res, span.size, span.etag),
          start: span.start,
          end: span.end,
          body: download(path, res, span, whole ? opts.sha256 : undefined)
        }
      } catch (err) {
        throw classify(err, name(path))
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
          for await (const chunk of body) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)))
          return { changed: true, etag: res.etag, text: Buffer.concat(chunks).toString('utf8') }
        })
      } catch (err) {
        if (statusOf(err) === 304) return { changed: false }
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
        if (statusOf(err) === 409) throw new StorageError('changed', `${name(path)} was created by someone else since it was read`, { status: 409, cause: err })
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
        const status = statusOf(err)
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

    async close () { await http.close() }
  }
}
