// Turns the STORAGE argument into a BlobStore: an account name, a blob endpoint URL (Azurite),
// or a local directory / file: URL. The one place that decides which backend and credential
// serve a process; it logs the choice through the caller and never a secret.

import { existsSync, statSync } from 'node:fs'
import { isAbsolute, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AnonymousCredential, BlobServiceClient } from '@azure/storage-blob'
import type { ContainerClient, StoragePipelineOptions } from '@azure/storage-blob'
import { createAzureStore } from './azure/store.ts'
import { chooseCredential } from './azure/credentials.ts'
import { proxyFor } from './azure/proxy.ts'
import type { ProxyTarget } from './azure/proxy.ts'
import { createLocalStore } from './local.ts'
import type { BlobStore } from './types.ts'
import type { StorageConfig } from '../cli/config.ts'
import { UserError } from '../lib/errors.ts'
import { withoutQuery } from '../lib/net.ts'

export type StorageTarget =
  | { readonly kind: 'local', readonly directory: string }
  | { readonly kind: 'azure', readonly url: string }
  | { readonly kind: 'connection-string' }

export class StorageSpecError extends UserError {
  override name = 'StorageSpecError'
}

const ACCOUNT_NAME = /^[a-z0-9]{3,24}$/

function looksLikePath (spec: string): boolean {
  return isAbsolute(spec) || spec.startsWith('./') || spec.startsWith('../') || spec === '.' || spec === '..' || spec.includes('/')
}

/** Classifies STORAGE; `connectionString` wins over everything but an explicit local directory. */
export function parseStorage (spec: string | undefined, opts: { endpointSuffix: string, connectionString?: string | undefined }): StorageTarget {
  const s = spec?.trim()
  const hasConnectionString = opts.connectionString !== undefined && opts.connectionString.trim() !== ''
  if (s !== undefined && s !== '') {
    // Never repeat a secret in an error message (they end up in container logs).
    if (/AccountKey=|SharedAccessSignature=/i.test(s)) {
      throw new StorageSpecError('STORAGE looks like a connection string: pass it in AZURE_STORAGE_CONNECTION_STRING (from a Secret), not as STORAGE')
    }
    const shown = s.replace(/[?#].*$/, '')
    if (s.startsWith('file:')) {
      let dir: string
      try {
        dir = fileURLToPath(s)
      } catch {
        throw new StorageSpecError(`STORAGE "${shown}" is not a valid file: URL (use file:///absolute/path)`)
      }
      return { kind: 'local', directory: dir }
    }
    if (/^https?:\/\//i.test(s)) {
      if (hasConnectionString) return { kind: 'connection-string' }
      let url: URL
      try {
        url = new URL(s)
      } catch {
        throw new StorageSpecError(`STORAGE "${shown}" is not a valid URL`)
      }
      return { kind: 'azure', url: url.href.replace(/\/$/, '') }
    }
    if (looksLikePath(s)) return { kind: 'local', directory: resolve(s) }
    if (hasConnectionString) return { kind: 'connection-string' }
    if (ACCOUNT_NAME.test(s)) return { kind: 'azure', url: `https://${s}.blob.${opts.endpointSuffix}` }
    throw new StorageSpecError(`STORAGE "${shown}" is not a storage account name (3-24 lowercase letters and digits), a blob endpoint URL or a local directory (write ./${shown} for a directory)`)
  }
  if (hasConnectionString) return { kind: 'connection-string' }
  throw new StorageSpecError('no STORAGE given: name a storage account, a blob endpoint URL or a local directory (or set AZURE_STORAGE_CONNECTION_STRING)')
}

export interface OpenedStore {
  readonly store: BlobStore
  /** What serves the blobs and as whom (never a secret), for the start-up log. */
  readonly description: string
}

const pipelineOptions: StoragePipelineOptions = {
  // Bounded per-try time so a stalled storage service cannot hold a request forever.
  retryOptions: { maxTries: 3, tryTimeoutInMs: 30_000, retryDelayInMs: 200, maxRetryDelayInMs: 2_000 },
  userAgentOptions: { userAgentPrefix: 'pkg-serve' }
}

function accountOf (connectionString: string): string {
  const account = /AccountName=([^;]+)/i.exec(connectionString)?.[1]
  if (account !== undefined) return `account ${account}`
  const endpoint = /BlobEndpoint=([^;]+)/i.exec(connectionString)?.[1]
  return endpoint !== undefined ? `endpoint ${withoutQuery(endpoint)}` : 'its account'
}

export async function openStore (opts: StorageConfig, env: Readonly<Record<string, string | undefined>>): Promise<OpenedStore> {
  const timeoutMs = (opts.storageTimeout ?? 30) * 1000
  const azure = (container: ContainerClient, description: string): OpenedStore => {
    let proxy: ProxyTarget | undefined
    try {
      proxy = proxyFor(new URL(container.url), env)
    } catch (err) {
      throw new StorageSpecError((err as Error).message)
    }
    const how = proxy !== undefined ? `${description}, through proxy ${proxy.shown}` : description
    return { store: createAzureStore({ container, description: how, requestTimeoutMs: timeoutMs, idleTimeoutMs: timeoutMs, proxy }), description: how }
  }
  const connectionString = env.AZURE_STORAGE_CONNECTION_STRING
  const target = parseStorage(opts.storage, { endpointSuffix: opts.endpointSuffix, connectionString })

  if (target.kind === 'local') {
    if (!existsSync(target.directory) || !statSync(target.directory).isDirectory()) {
      throw new StorageSpecError(`local storage directory ${target.directory} does not exist`)
    }
    const dir = join(target.directory, opts.container)
    const store = createLocalStore(dir)
    return { store, description: `${store.description} (no credential)` }
  }

  if (target.kind === 'connection-string') {
    let service: BlobServiceClient
    try {
      service = BlobServiceClient.fromConnectionString(connectionString ?? '', pipelineOptions)
    } catch (err) {
      throw new StorageSpecError(`AZURE_STORAGE_CONNECTION_STRING is not a valid connection string: ${(err as Error).message}`)
    }
    const description = `container "${opts.container}" at ${withoutQuery(service.url)} with a connection string (${accountOf(connectionString ?? '')})`
    return azure(service.getContainerClient(opts.container), description)
  }

  const url = new URL(target.url)
  if (url.search.includes('sig=')) {
    // A SAS URL carries its own authorization: no credential, and never log the query.
    const service = new BlobServiceClient(target.url, new AnonymousCredential(), pipelineOptions)
    const description = `container "${opts.container}" at ${withoutQuery(url)} with a SAS token`
    return azure(service.getContainerClient(opts.container), description)
  }
  const { credential, description: how } = await chooseCredential({ env, identityClientId: opts.identityClientId, azureJsonPath: opts.azureJson })
  const service = new BlobServiceClient(target.url, credential, pipelineOptions)
  const description = `container "${opts.container}" at ${target.url} with ${how}`
  return azure(service.getContainerClient(opts.container), description)
}
