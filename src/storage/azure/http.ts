// The hot path to Azure Blob Storage: HEAD and GET of one blob through undici, with the SDK's
// credential but without the SDK's per-request pipeline and stream layers. One keep-alive
// dispatcher per storage origin for the life of the store: a Pool straight to storage, or a
// ProxyAgent when proxy.ts says the SDK would use a proxy (a CONNECT tunnel for https, forwarded
// requests for http). Authorization: a container SAS signed with the account key (re-signed
// hourly), a bearer token from the token credential (renewed before it expires), or the SAS
// already in the URL. Nothing here logs a URL or a header; nothing here retries (store.ts does).
// Bodies come straight from undici's dispatch handler (RawBody), without undici's own body
// stream: over TLS that second stream layer cost ~0.2 CPU-s per GiB (bench/README.md).

import { AnonymousCredential, ContainerSASPermissions, StorageSharedKeyCredential, generateBlobSASQueryParameters } from '@azure/storage-blob'
import type { ContainerClient } from '@azure/storage-blob'
import { EventEmitter } from 'node:events'
import { Pool, ProxyAgent } from 'undici'
import type { Dispatcher } from 'undici'
import type { ProxyTarget } from './proxy.ts'
import type { ByteSource } from '../parallel-read.ts'
import { StorageError } from '../types.ts'
import { bracketHost } from '../../lib/net.ts'

const API_VERSION = '2025-01-05'
const STORAGE_SCOPE = 'https://storage.azure.com/.default'

export interface BlobHttpOptions {
  /** Bound on connecting (TLS and tunnel included) and, per request, on silence mid-body. */
  readonly timeoutMs: number
  /** The proxy to reach storage through (see proxy.ts). */
  readonly proxy?: ProxyTarget | undefined
  /** Certificates to trust besides the system's (tests); production uses NODE_EXTRA_CA_CERTS. */
  readonly ca?: string | Buffer | undefined
}

/** What a body's reader needs of it (a Readable is one, too): parallel reads take the same. */
export type BodySource = ByteSource

/**
 * A response body as undici's handler delivers it: 'data', 'end', 'error' events, paused until
 * resumed (a chunk that arrives meanwhile waits here, and the connection is paused: at most one
 * socket read is held). Destroying it aborts the request (the connection is closed).
 */
export class RawBody extends EventEmitter implements BodySource {
  readonly #abort: (err: Error) => void
  readonly #resumeSocket: () => void
  readonly #queue: Buffer[] = []
  #flowing = false
  /** undici was told to stop reading the socket (onData returned false). */
  #held = false
  #ended = false
  #closed = false
  /** A failure before anyone listened: raised on the next resume(). */
  #failure: Error | undefined

  constructor (abort: (err: Error) => void, resumeSocket: () => void) {
    super()
    this.#abort = abort
    this.#resumeSocket = resumeSocket
  }

  /** From undici: false asks it to stop reading until resumed. */
  take (chunk: Buffer): boolean {
    if (this.#closed) return false
    if (this.#flowing && this.#queue.length === 0) {
      this.emit('data', chunk)
      if (this.#flowing) return true
    } else {
      this.#queue.push(chunk)
    }
    this.#held = true
    return false
  }

  finish (): void {
    this.#ended = true
    this.#drain()
  }

  fail (err: Error): void {
    if (this.#closed) return
    this.#closed = true
    if (this.listenerCount('error') > 0) this.emit('error', err)
    else this.#failure = err
  }

  pause (): void {
    this.#flowing = false
  }

  resume (): void {
    const failure = this.#failure
    if (failure !== undefined && this.listenerCount('error') > 0) {
      this.#failure = undefined
      this.emit('error', failure)
    }
    if (this.#closed) return
    this.#flowing = true
    this.#drain()
    if (this.#flowing && !this.#ended && this.#held) {
      this.#held = false
      this.#resumeSocket()
    }
  }

  destroy (): void {
    if (this.#closed) return
    this.#closed = true
    this.#queue.length = 0
    if (!this.#ended) this.#abort(new Error('the reader went away'))
  }

  #drain (): void {
    while (this.#flowing && !this.#closed && this.#queue.length > 0) {
      const chunk = this.#queue.shift()
      if (chunk !== undefined) this.emit('data', chunk)
    }
    if (this.#flowing && this.#ended && !this.#closed && this.#queue.length === 0) {
      this.#closed = true
      this.emit('end')
    }
  }
}

/** undici's raw headers (name, value, name, value…) with lower-case names, repeats joined. */
function headersOf (raw: Array<Buffer | string>): Record<string, string> {
  const flat: Record<string, string> = {}
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = String(raw[i]).toLowerCase()
    const value = String(raw[i + 1])
    flat[name] = flat[name] === undefined ? value : `${flat[name]}, ${value}`
  }
  return flat
}

export interface BlobResponse {
  readonly status: number
  /** Lower-case names; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string>>
  /** The body (empty for HEAD): the caller must read (resume) or destroy it. */
  readonly body: RawBody
}

type Authorizer = () => Promise<{ query: string, headers: Record<string, string> }>

function authorizerFor (container: ContainerClient): Authorizer {
  const credential = container.credential
  const inUrl = new URL(container.url).search.slice(1)
  if (credential instanceof StorageSharedKeyCredential) {
    let sas = ''
    let renewAt = 0
    return async () => {
      if (Date.now() >= renewAt) {
        const now = Date.now()
        sas = generateBlobSASQueryParameters({
          containerName: container.containerName,
          permissions: ContainerSASPermissions.parse('r'),
          startsOn: new Date(now - 5 * 60_000),
          expiresOn: new Date(now + 2 * 3600_000)
        }, credential).toString()
        renewAt = now + 3600_000
      }
      return { query: sas, headers: {} }
    }
  }
  if (credential instanceof AnonymousCredential) return async () => ({ query: inUrl, headers: {} })
  const tokens = credential
  let token: { value: string, renewAt: number } | undefined
  let pending: Promise<string> | undefined
  return async () => {
    if (token === undefined || Date.now() >= token.renewAt) {
      pending ??= tokens.getToken(STORAGE_SCOPE).then((t) => {
        if (t === null) throw new StorageError('denied', 'the credential gave no token for Azure Storage')
        token = { value: t.token, renewAt: Math.min(t.expiresOnTimestamp - 5 * 60_000, Date.now() + 3600_000) }
        return t.token
      }).finally(() => { pending = undefined })
      await pending
    }
    return { query: inUrl, headers: { authorization: `Bearer ${token?.value ?? ''}` } }
  }
}

export interface BlobHttp {
  /** One request; `headersTimeoutMs` bounds the wait for its response's headers. */
  send (method: 'GET' | 'HEAD', path: string, headers: Record<string, string>, headersTimeoutMs: number): Promise<BlobResponse>
  /** Closes the kept connections (bodies being read keep theirs until they end). */
  close (): Promise<void>
}

export function createBlobHttp (container: ContainerClient, options: BlobHttpOptions): BlobHttp {
  const base = new URL(container.url)
  const origin = base.origin
  const connect = { timeout: options.timeoutMs, ...(options.ca !== undefined && { ca: options.ca }) }
  // Idle connections kept 30 s at most (storage closes its end after a few minutes idle);
  // bodyTimeout is silence while the reader wants bytes: undici does not count a paused body.
  const common = { keepAliveTimeout: 4_000, keepAliveMaxTimeout: 30_000, bodyTimeout: options.timeoutMs }
  const proxy = options.proxy
  const dispatcher: Dispatcher = proxy === undefined
    ? new Pool(origin, { ...common, connect })
    : new ProxyAgent({
      ...common,
      uri: `http://${bracketHost(proxy.hostname)}:${proxy.port}`,
      ...(proxy.auth !== undefined && { token: `Basic ${Buffer.from(proxy.auth).toString('base64')}` }),
      // Storage over http (Azurite) is forwarded; https goes through a CONNECT tunnel.
      proxyTunnel: base.protocol === 'https:',
      proxyTls: { timeout: options.timeoutMs },
      requestTls: connect
    })
  const containerPath = base.pathname.replace(/\/$/, '')
  const authorize = authorizerFor(container)

  return {
    async close () { await dispatcher.close() },
    async send (method, path, headers, headersTimeoutMs) {
      const auth = await authorize()
      const blobPath = `${containerPath}/${path.split('/').map(encodeURIComponent).join('/')}`
      return new Promise<BlobResponse>((resolve, reject) => {
        let body: RawBody | undefined
        let abort: (err: Error) => void = () => {}
        dispatcher.dispatch({
          origin,
          method,
          path: auth.query === '' ? blobPath : `${blobPath}?${auth.query}`,
          headers: { 'x-ms-version': API_VERSION, ...auth.headers, ...headers },
          headersTimeout: Math.max(1, Math.round(headersTimeoutMs)),
          bodyTimeout: options.timeoutMs
        }, {
          // undici's handler interface (Pool.dispatch takes this one): false from onData pauses
          // the connection until `resume` is called.
          onConnect (abortRequest) { abort = abortRequest },
          onHeaders (statusCode, rawHeaders, resume) {
            if (statusCode < 200) return true
            body = new RawBody(abort, resume)
            resolve({ status: statusCode, headers: headersOf(rawHeaders), body })
            return true
          },
          onData (chunk) { return body?.take(chunk) ?? false },
          onComplete () { body?.finish() },
          onError (err) {
            if (body !== undefined) body.fail(err)
            else reject(err)
          }
        })
      })
    }
  }
}
