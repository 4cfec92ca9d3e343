// The hot path to Azure Blob Storage: HEAD and GET of one blob over a keep-alive agent, with the
// SDK's credential but without the SDK's per-request pipeline and stream layers (which cost more
// CPU per GiB than the copy itself). The response body is handed over as the socket's own
// stream: no intermediate stream, no per-chunk work here. Authorization: a container SAS signed
// with the account key (re-signed hourly), a bearer token from the token credential (renewed
// before it expires), or the SAS already in the URL. Nothing here logs a URL or a header.

import { Agent as HttpAgent, request as httpRequest } from 'node:http'
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { AnonymousCredential, ContainerSASPermissions, StorageSharedKeyCredential, generateBlobSASQueryParameters } from '@azure/storage-blob'
import type { ContainerClient } from '@azure/storage-blob'
import type { TokenCredential } from '@azure/core-auth'
import { StorageError } from './types.ts'

const API_VERSION = '2025-01-05'
const STORAGE_SCOPE = 'https://storage.azure.com/.default'

export interface BlobHttpOptions {
  /** Bound on the wait for response headers. */
  readonly requestTimeoutMs: number
}

export interface BlobResponse {
  readonly status: number
  readonly headers: IncomingMessage['headers']
  readonly body: IncomingMessage
}

type Authorizer = () => Promise<{ query: string, headers: OutgoingHttpHeaders }>

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
  const tokens = credential as TokenCredential
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
  send (method: 'GET' | 'HEAD', path: string, headers: OutgoingHttpHeaders): Promise<BlobResponse>
  /** Closes the idle keep-alive sockets. */
  close (): void
}

export function createBlobHttp (container: ContainerClient, options: BlobHttpOptions): BlobHttp {
  const base = new URL(container.url)
  const isHttps = base.protocol === 'https:'
  const containerPath = base.pathname.replace(/\/$/, '')
  // Few sockets, reused: a handful of downloads at a time per node.
  const agentOptions = { keepAlive: true, keepAliveMsecs: 10_000, maxSockets: 64, maxFreeSockets: 16, scheduling: 'lifo' as const }
  const agent = isHttps ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions)
  const authorize = authorizerFor(container)
  const send = isHttps ? httpsRequest : httpRequest

  return {
    close () { agent.destroy() },
    async send (method, path, headers) {
      const auth = await authorize()
      const blobPath = `${containerPath}/${path.split('/').map(encodeURIComponent).join('/')}`
      return await new Promise<BlobResponse>((resolve, reject) => {
        const req = send({
          protocol: base.protocol,
          hostname: base.hostname,
          port: base.port,
          path: auth.query === '' ? blobPath : `${blobPath}?${auth.query}`,
          method,
          agent,
          headers: { 'x-ms-version': API_VERSION, ...auth.headers, ...headers }
        }, (res) => {
          req.setTimeout(0)
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res })
        })
        req.setTimeout(options.requestTimeoutMs, () => {
          req.destroy(new StorageError('timeout', `storage did not answer within ${options.requestTimeoutMs} ms for blob "${path}" in container "${container.containerName}"`))
        })
        req.once('error', reject)
        req.end()
      })
    }
  }
}
