// A real Azurite blob service for one test file, stopped afterwards: over plain HTTP, or over
// HTTPS with a certificate made here with openssl (for 127.0.0.1 and localhost), as Azure Storage
// is always reached. Seeds go through @azure/storage-blob over HTTP, as a user's uploads would;
// over HTTPS (which this test process cannot be told to trust after start-up) through `put`,
// a plain Put Blob with a SAS over undici given the certificate.

import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { AccountSASPermissions, AccountSASResourceTypes, AccountSASServices, BlobServiceClient, StorageSharedKeyCredential, generateAccountSASQueryParameters } from '@azure/storage-blob'
import type { ContainerClient } from '@azure/storage-blob'
import { Agent, request } from 'undici'
import { AZURITE_ACCOUNT, AZURITE_KEY, spawnAzurite } from '../../scripts/azurite.ts'
import type { AzuriteProcess } from '../../scripts/azurite.ts'
import { tempDir } from './tmp.ts'

export { AZURITE_ACCOUNT, AZURITE_KEY, connectionStringFor } from '../../scripts/azurite.ts'

export interface Certificate {
  /** PEM files: the certificate (also its own CA) and its key. */
  readonly certFile: string
  readonly keyFile: string
  readonly cert: string
  readonly key: string
}

/** A self-signed certificate for 127.0.0.1 and localhost, made with openssl for this test. */
export async function makeCertificate (t: TestContext): Promise<Certificate> {
  const dir = await tempDir(t)
  const certFile = join(dir, 'cert.pem')
  const keyFile = join(dir, 'key.pem')
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=pkg-serve test storage',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-addext', 'basicConstraints=critical,CA:TRUE'
  ], { stdio: 'ignore' })
  return { certFile, keyFile, cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') }
}

export interface Azurite extends AzuriteProcess {
  readonly service: BlobServiceClient
  /** The certificate it serves (HTTPS only): trust it with NODE_EXTRA_CA_CERTS or `ca`. */
  readonly certificate?: Certificate
  /** Over HTTP only (the SDK in this process cannot trust the test certificate). */
  container (name?: string): Promise<ContainerClient>
  /** Creates the container if needed and writes a blob, over HTTP or HTTPS. */
  put (path: string, data: Buffer | string, options?: { container?: string, contentType?: string }): Promise<void>
}

export async function startAzurite (t?: TestContext, options: { tls?: boolean } = {}): Promise<Azurite> {
  const certificate = options.tls === true && t !== undefined ? await makeCertificate(t) : undefined
  const azurite = await spawnAzurite(certificate !== undefined ? { tls: { cert: certificate.certFile, key: certificate.keyFile } } : {})
  t?.after(() => azurite.stop())
  const service = BlobServiceClient.fromConnectionString(azurite.connectionString)
  const sas = generateAccountSASQueryParameters({
    permissions: AccountSASPermissions.parse('rwdlac'),
    services: AccountSASServices.parse('b').toString(),
    resourceTypes: AccountSASResourceTypes.parse('sco').toString(),
    expiresOn: new Date(Date.now() + 24 * 3600_000)
  }, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)).toString()
  const dispatcher = new Agent({ connect: { ...(certificate !== undefined && { ca: certificate.cert }) } })
  t?.after(() => dispatcher.close())
  const created = new Set<string>()
  const call = async (method: string, path: string, query: string, body?: Buffer | string, headers: Record<string, string> = {}): Promise<void> => {
    const res = await request(`${azurite.blobEndpoint}/${path}?${query}${query === '' ? '' : '&'}${sas}`, {
      method, dispatcher, headers: { 'x-ms-version': '2025-01-05', ...headers }, ...(body !== undefined && { body })
    })
    const text = await res.body.text()
    if (res.statusCode >= 300 && !(res.statusCode === 409 && method === 'PUT' && query.includes('restype=container'))) {
      throw new Error(`${method} ${path}: ${res.statusCode} ${text}`)
    }
  }
  return {
    ...azurite,
    service,
    ...(certificate !== undefined && { certificate }),
    async container (name = 'pkg') {
      const c = service.getContainerClient(name)
      await c.createIfNotExists()
      return c
    },
    async put (path, data, opts = {}) {
      const container = opts.container ?? 'pkg'
      if (!created.has(container)) {
        await call('PUT', container, 'restype=container')
        created.add(container)
      }
      await call('PUT', `${container}/${path.split('/').map(encodeURIComponent).join('/')}`, '', data, {
        'x-ms-blob-type': 'BlockBlob',
        ...(opts.contentType !== undefined && { 'x-ms-blob-content-type': opts.contentType })
      })
    }
  }
}
