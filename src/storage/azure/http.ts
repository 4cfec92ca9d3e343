// The hot path to Azure Blob Storage: HEAD and GET of one blob over the small client in wire.ts,
// with the SDK's credential but without the SDK's per-request pipeline and stream layers (which
// cost more CPU per GiB than moving the bytes). Authorization: a container SAS signed with the
// account key (re-signed hourly), a bearer token from the token credential (renewed before it
// expires), or the SAS already in the URL. Nothing here logs a URL or a header.

import { AnonymousCredential, ContainerSASPermissions, StorageSharedKeyCredential, generateBlobSASQueryParameters } from '@azure/storage-blob'
import type { ContainerClient } from '@azure/storage-blob'
import type { TokenCredential } from '@azure/identity'
import type { ProxyTarget } from './proxy.ts'
import { StorageError } from '../types.ts'
import { createWire } from './wire.ts'
import type { BodyCheck, WireResponse } from './wire.ts'

const API_VERSION = '2025-01-05'
const STORAGE_SCOPE = 'https://storage.azure.com/.default'

export interface BlobHttpOptions {
  /** Bound on the wait for response headers. */
  readonly requestTimeoutMs: number
  /** The proxy to reach storage through (see proxy.ts). */
  readonly proxy?: ProxyTarget | undefined
  /** A body that receives nothing for this long while its reader wants data is broken. */
  readonly idleTimeoutMs: number
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
  /** `what` names the blob in messages; `check` sees a GET's whole body (see BodyCheck). */
  send (method: 'GET' | 'HEAD', path: string, headers: Record<string, string>, what: string, check?: BodyCheck): Promise<WireResponse>
  /** Closes the idle connections. */
  close (): void
}

export function createBlobHttp (container: ContainerClient, options: BlobHttpOptions): BlobHttp {
  const base = new URL(container.url)
  const protocol = base.protocol === 'https:' ? 'https:' : 'http:'
  const port = base.port !== '' ? Number(base.port) : protocol === 'https:' ? 443 : 80
  // URL keeps an IPv6 literal's brackets; a socket wants the bare address.
  const hostname = base.hostname.replace(/^\[(.*)\]$/, '$1')
  const wire = createWire({ protocol, hostname, port, proxy: options.proxy }, options)
  const containerPath = base.pathname.replace(/\/$/, '')
  const authorize = authorizerFor(container)

  return {
    close () { wire.close() },
    async send (method, path, headers, what, check) {
      const auth = await authorize()
      const blobPath = `${containerPath}/${path.split('/').map(encodeURIComponent).join('/')}`
      return await wire.send({
        method,
        path: auth.query === '' ? blobPath : `${blobPath}?${auth.query}`,
        headers: { 'x-ms-version': API_VERSION, ...auth.headers, ...headers },
        what,
        ...(check !== undefined && { check })
      })
    }
  }
}
