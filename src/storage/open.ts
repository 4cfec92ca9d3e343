// Turns the STORAGE argument into a BlobStore: an account name, a blob endpoint URL (Azurite),
// or a local directory / file: URL. The one place that decides which backend and credential
// serve a process; it logs the choice through the caller and never a secret.

import { existsSync, statSync } from 'node:fs'
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AnonymousCredential, BlobServiceClient } from '@azure/storage-blob'
import type { ContainerClient, StoragePipelineOptions } from '@azure/storage-blob'
import { createAzureStore } from './azure/store.ts'
import { ReadAheadBudget } from './parallel-read.ts'
import { chooseCredential } from './azure/credentials.ts'
import { proxyFor } from './azure/proxy.ts'
import type { ProxyTarget } from './azure/proxy.ts'
import { createLocalStore } from './local.ts'
import type { WritableStore } from './types.ts'
import type { StorageConfig } from '../cli/config.ts'
import { UserError, messageOf } from '../lib/errors.ts'
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

/** The blob endpoint a connection string points at, and its account (for the one-line mismatch error). */
export function connectionStringTarget (connectionString: string, endpointSuffix: string): { endpoint?: string, account?: string } {
  const field = (name: string): string | undefined => new RegExp(`(?:^|;)\\s*${name}=([^;]*)`, 'i').exec(connectionString)?.[1]?.trim()
  if (/(?:^|;)\s*UseDevelopmentStorage=true/i.test(connectionString)) {
    return { endpoint: 'http://127.0.0.1:10000/devstoreaccount1', account: 'devstoreaccount1' }
  }
  const account = field('AccountName')
  const blobEndpoint = field('BlobEndpoint')
  if (blobEndpoint !== undefined && blobEndpoint !== '') return { endpoint: withoutQuery(blobEndpoint).replace(/\/+$/, ''), ...(account !== undefined && { account }) }
  if (account === undefined) return {}
  const protocol = field('DefaultEndpointsProtocol') ?? 'https'
  return { endpoint: `${protocol}://${account}.blob.${field('EndpointSuffix') ?? endpointSuffix}`, account }
}

function sameEndpoint (a: string, b: string): boolean {
  try {
    const x = new URL(a)
    const y = new URL(b)
    const path = (u: URL): string => u.pathname.replace(/\/+$/, '')
    return x.protocol === y.protocol && x.host.toLowerCase() === y.host.toLowerCase() && path(x) === path(y)
  } catch {
    return false
  }
}

/** The account a blob endpoint URL serves: NAME.blob.… in Azure, the first path segment in Azurite. */
function accountOfEndpoint (url: string): string | undefined {
  try {
    const u = new URL(url)
    return /^([a-z0-9]+)\.blob\./i.exec(u.hostname)?.[1] ?? u.pathname.split('/').find((s) => s !== '')
  } catch {
    return undefined
  }
}

/**
 * A connection string serves STORAGE only when both name the same account or endpoint; anything
 * else is an error that names the two (never a key or a signature).
 */
function checkConnectionString (spec: string, shown: string, connectionString: string, endpointSuffix: string, url?: string): void {
  const cs = connectionStringTarget(connectionString, endpointSuffix)
  const csName = cs.account !== undefined ? `account ${cs.account}` : cs.endpoint !== undefined ? `endpoint ${cs.endpoint}` : 'no account it names'
  if (url !== undefined) {
    if (cs.endpoint !== undefined && sameEndpoint(url, cs.endpoint)) return
    throw new StorageSpecError(`STORAGE names endpoint ${withoutQuery(url)}, but AZURE_STORAGE_CONNECTION_STRING is for ${csName}${cs.account !== undefined && cs.endpoint !== undefined ? ` at ${cs.endpoint}` : ''}: ` +
      'give the same one, or leave STORAGE out (or unset AZURE_STORAGE_CONNECTION_STRING)')
  }
  const account = cs.account ?? (cs.endpoint !== undefined ? accountOfEndpoint(cs.endpoint) : undefined)
  if (account !== undefined && account.toLowerCase() === spec.toLowerCase()) return
  throw new StorageSpecError(`STORAGE names account ${shown}, but AZURE_STORAGE_CONNECTION_STRING is for ${csName}: ` +
    'give the same one, or leave STORAGE out (or unset AZURE_STORAGE_CONNECTION_STRING)')
}

/**
 * STORAGE with the SAS that PKG_SERVE_STORAGE carries, when both name the same endpoint (an
 * account name, or a URL without a query): a SAS belongs in the environment, from a Secret, not
 * in args that the node's process list shows, while the DaemonSet's args still name the account.
 * Anything else is STORAGE as given.
 */
export function withSasFromEnv (spec: string | undefined, fromEnv: string | undefined, endpointSuffix: string): string | undefined {
  const s = spec?.trim()
  const sasUrl = fromEnv?.trim()
  if (s === undefined || sasUrl === undefined || s === sasUrl || s.includes('?')) return spec
  let sas: URL
  try {
    sas = new URL(sasUrl)
  } catch {
    return spec
  }
  if (!sas.searchParams.has('sig')) return spec
  const named = ACCOUNT_NAME.test(s) ? `https://${s}.blob.${endpointSuffix}` : /^https?:\/\//i.test(s) ? s : undefined
  return named !== undefined && sameEndpoint(named, withoutQuery(sas)) ? sasUrl : spec
}

/**
 * Classifies STORAGE. A connection string serves it when STORAGE is absent or names the same
 * account or endpoint; an explicit local directory always wins.
 */
export function parseStorage (spec: string | undefined, opts: { endpointSuffix: string, connectionString?: string | undefined, cwd?: string }): StorageTarget {
  const s = spec?.trim()
  const connectionString = opts.connectionString !== undefined && opts.connectionString.trim() !== '' ? opts.connectionString : undefined
  if (s !== undefined && s !== '') {
    // Never repeat a secret in an error message (they end up in container logs).
    if (/AccountKey=|SharedAccessSignature=/i.test(s)) {
      throw new StorageSpecError('STORAGE looks like a connection string: pass it in AZURE_STORAGE_CONNECTION_STRING (from a Secret), not as STORAGE')
    }
    const shown = withoutQuery(s)
    if (s.startsWith('file:')) {
      let dir: string
      try {
        dir = fileURLToPath(s)
      } catch {
        throw new StorageSpecError(`STORAGE "${shown}" is not a valid file: URL (use file:///absolute/path)`)
      }
      return { kind: 'local', directory: dir }
    }
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(s)?.[1]
    if (scheme !== undefined && !/^https?$/i.test(scheme)) {
      throw new StorageSpecError(`STORAGE "${shown}" starts with "${scheme}://": use https:// (http:// for Azurite), file:// or a directory path`)
    }
    if (scheme !== undefined) {
      let url: URL
      try {
        url = new URL(s)
      } catch {
        throw new StorageSpecError(`STORAGE "${shown}" is not a valid URL`)
      }
      const href = url.href.replace(/\/$/, '')
      if (connectionString !== undefined) {
        checkConnectionString(s, shown, connectionString, opts.endpointSuffix, href)
        return { kind: 'connection-string' }
      }
      return { kind: 'azure', url: href }
    }
    if (looksLikePath(s)) return { kind: 'local', directory: resolve(opts.cwd ?? '.', s) }
    // `serve store` with a ./store directory here: an account named "store" is almost never meant.
    const local = resolve(opts.cwd ?? '.', s)
    if (existsSync(local) && statSync(local).isDirectory()) {
      throw new StorageSpecError(`STORAGE "${shown}" is read as a storage account name, but ./${shown} is a directory here: did you mean ./${shown}? ` +
        `(for the account, write https://${shown}.blob.${opts.endpointSuffix})`)
    }
    if (connectionString !== undefined) {
      checkConnectionString(s, shown, connectionString, opts.endpointSuffix)
      return { kind: 'connection-string' }
    }
    if (ACCOUNT_NAME.test(s)) return { kind: 'azure', url: `https://${s}.blob.${opts.endpointSuffix}` }
    throw new StorageSpecError(`STORAGE "${shown}" is not a storage account name (3-24 lowercase letters and digits), a blob endpoint URL or a local directory (write ./${shown} for a directory)`)
  }
  if (connectionString !== undefined) return { kind: 'connection-string' }
  throw new StorageSpecError('no STORAGE given: name a storage account, a blob endpoint URL or a local directory (or set AZURE_STORAGE_CONNECTION_STRING)')
}

export interface OpenedStore {
  readonly store: WritableStore
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

/** How a server reads large blobs (--read-connections, --read-chunk, --read-ahead, --read-min-speedup). */
export interface ParallelReads {
  readonly connections: number
  readonly chunkBytes: number
  /** The read-ahead memory shared by every download of the process. */
  readonly budgetBytes: number
  /** See parallelRead's minSpeedup. */
  readonly minSpeedup?: number
}

export async function openStore (opts: StorageConfig, env: Readonly<Record<string, string | undefined>>, reads?: ParallelReads): Promise<OpenedStore> {
  const timeoutMs = (opts.storageTimeout ?? 30) * 1000
  // One budget for the process: the store is opened once and lives as long as it.
  const parallel = reads === undefined ? undefined : { connections: reads.connections, chunkBytes: reads.chunkBytes, budget: new ReadAheadBudget(reads.budgetBytes), minSpeedup: reads.minSpeedup }
  const azure = (container: ContainerClient, description: string): OpenedStore => {
    let proxy: ProxyTarget | undefined
    try {
      proxy = proxyFor(new URL(container.url), env)
    } catch (err) {
      throw new StorageSpecError(messageOf(err))
    }
    const how = proxy !== undefined ? `${description}, through proxy ${proxy.shown}` : description
    return { store: createAzureStore({ container, description: how, requestTimeoutMs: timeoutMs, idleTimeoutMs: timeoutMs, proxy, parallel }), description: how }
  }
  const connectionString = env.AZURE_STORAGE_CONNECTION_STRING
  const spec = withSasFromEnv(opts.storage, env.PKG_SERVE_STORAGE, opts.endpointSuffix)
  const target = parseStorage(spec, { endpointSuffix: opts.endpointSuffix, connectionString })

  if (target.kind === 'local') {
    if (!existsSync(target.directory) || !statSync(target.directory).isDirectory()) {
      throw new StorageSpecError(`local storage directory ${target.directory} does not exist`)
    }
    const dir = join(target.directory, opts.container)
    if (!existsSync(dir) && basename(target.directory) === opts.container) {
      // `serve ./store/pkg`: STORAGE is the directory that holds the container directory.
      const shown = (p: string): string => relative('.', p) === '' || relative('.', p).startsWith('..') ? p : relative('.', p)
      throw new StorageSpecError(`the container directory ${shown(dir)} does not exist: STORAGE is the directory that holds the container ` +
        `directory "${opts.container}" (did you mean ${shown(dirname(target.directory))}?)`)
    }
    const store = createLocalStore(dir)
    return { store, description: `${store.description} (no credential)` }
  }

  if (target.kind === 'connection-string') {
    let service: BlobServiceClient
    try {
      service = BlobServiceClient.fromConnectionString(connectionString ?? '', pipelineOptions)
    } catch (err) {
      throw new StorageSpecError(`AZURE_STORAGE_CONNECTION_STRING is not a valid connection string: ${messageOf(err)}`)
    }
    const description = `container "${opts.container}" at ${withoutQuery(service.url)} with a connection string (${accountOf(connectionString ?? '')})`
    return azure(service.getContainerClient(opts.container), description)
  }

  const url = new URL(target.url)
  if (url.search.includes('sig=')) {
    // A SAS URL carries its own authorization: no credential, and never log the query.
    const service = new BlobServiceClient(target.url, new AnonymousCredential(), pipelineOptions)
    const description = `container "${opts.container}" at ${withoutQuery(url)} with a SAS token${spec !== opts.storage ? ' (from PKG_SERVE_STORAGE)' : ''}`
    return azure(service.getContainerClient(opts.container), description)
  }
  if (url.protocol === 'http:') {
    // Azure AD tokens are only ever sent over TLS: over http:// every request would be refused.
    throw new StorageSpecError(`STORAGE ${withoutQuery(url)} is http://, where a token credential cannot be used: ` +
      'give a SAS URL (in PKG_SERVE_STORAGE, from a Secret) or AZURE_STORAGE_CONNECTION_STRING (Azurite), or use https://')
  }
  const { credential, description: how } = await chooseCredential({ env, identityClientId: opts.identityClientId, azureJsonPath: opts.azureJson })
  const service = new BlobServiceClient(target.url, credential, pipelineOptions)
  const description = `container "${opts.container}" at ${withoutQuery(target.url)} with ${how}`
  return azure(service.getContainerClient(opts.container), description)
}
