// Storage failures reach the client with their true status: real 403s from Azurite (a wrong
// account key), a real refused connection, and a real stall (a socket that never answers).

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import type { Server, Socket } from 'node:net'
import { BlobServiceClient } from '@azure/storage-blob'
import { buildApp } from '../../src/app.ts'
import { createAzureStore } from '../../src/storage/azure/store.ts'
import type { BlobStore } from '../../src/storage/types.ts'
import { connectionStringFor, startAzurite } from '../helpers/azurite.ts'

async function listenTcp (t: { after: (fn: () => Promise<void>) => void }, onSocket: (s: Socket) => void): Promise<{ server: Server, port: number }> {
  const sockets = new Set<Socket>()
  const server = createServer((s) => { sockets.add(s); onSocket(s) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()) }))
  const address = server.address()
  assert.ok(typeof address === 'object' && address !== null)
  return { server, port: address.port }
}

function storeAt (endpoint: string, key?: string, timeoutMs = 5000): BlobStore {
  const service = BlobServiceClient.fromConnectionString(connectionStringFor(endpoint, key), {
    retryOptions: { maxTries: 1 }
  })
  return createAzureStore({ container: service.getContainerClient('pkg'), description: endpoint, requestTimeoutMs: timeoutMs })
}

/** The manifest from one store, the blobs from another: a manifest that loads, blobs that fail. */
function split (manifestStore: BlobStore, blobStore: BlobStore): BlobStore {
  return {
    description: blobStore.description,
    stat: (p) => blobStore.stat(p),
    read: (p, o) => blobStore.read(p, o),
    readText: (p, e) => manifestStore.readText(p, e),
    writeText: (p, text, m) => manifestStore.writeText(p, text, m),
    upload: (p, d, o) => blobStore.upload(p, d, o),
    close: async () => {}
  }
}

test('storage failures keep their true status and say what to do', async (t) => {
  const azurite = await startAzurite(t)
  const container = await azurite.container('pkg')
  await container.getBlockBlobClient('a.deb').uploadData(Buffer.from('a'))
  await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from("[a.latest]\npath = 'a.deb'\n"))
  const good = storeAt(azurite.blobEndpoint)

  const appFor = async (blobs: BlobStore) => {
    const app = await buildApp({ store: split(good, blobs), manifestPath: 'packages.toml', pollIntervalSeconds: 0 })
    t.after(() => app.close())
    await app.ready()
    return app
  }

  await t.test('403 from storage is a 502 naming the missing role, never a 404', async () => {
    const app = await appFor(storeAt(azurite.blobEndpoint, Buffer.alloc(64, 9).toString('base64')))
    for (const method of ['GET', 'HEAD'] as const) {
      const res = await app.inject({ method, url: '/pkg/a/latest' })
      assert.equal(res.statusCode, 502, method)
    }
    const res = await app.inject('/pkg/a/latest')
    assert.equal(res.json().error, 'Bad Gateway')
    assert.match(res.json().message, /storage refused this server's identity \(403 AuthorizationFailure\) reading \[a\.latest\] \(blob "a\.deb"\): grant its identity the "Storage Blob Data Reader" role on the container, or check the SAS/)
    assert.match((await app.inject('/metrics')).body, /pkg_serve_storage_errors_total\{kind="denied"\} 3/)
  })

  await t.test('a refused connection is a 502 that says storage is unreachable', async () => {
    const { server, port } = await listenTcp(t, (s) => s.destroy())
    await new Promise<void>((resolve) => server.close(() => resolve()))
    const app = await appFor(storeAt(`http://127.0.0.1:${port}/devstoreaccount1`))
    const res = await app.inject('/pkg/a/latest')
    assert.equal(res.statusCode, 502)
    assert.match(res.json().message, /storage is unreachable for \[a\.latest\]/)
  })

  await t.test('a storage service that never answers is a 504 within the per-try timeout', async () => {
    const { port } = await listenTcp(t, () => { /* accept and stay silent */ })
    const app = await appFor(storeAt(`http://127.0.0.1:${port}/devstoreaccount1`, undefined, 300))
    const started = Date.now()
    const res = await app.inject('/pkg/a/latest')
    assert.equal(res.statusCode, 504, res.body)
    assert.match(res.json().message, /^storage did not answer within 300 ms for blob "a\.deb" in container "pkg", serving \[a\.latest\] \(blob "a\.deb"\); try again later$/)
    assert.ok(Date.now() - started < 5000)
  })

  await t.test('a manifest storage refuses: not ready, with the reason in /readyz', async () => {
    const denied = storeAt(azurite.blobEndpoint, Buffer.alloc(64, 9).toString('base64'))
    const app = await buildApp({ store: denied, manifestPath: 'packages.toml', pollIntervalSeconds: 0, retryMinMs: 60_000 })
    t.after(() => app.close())
    await app.ready()
    const ready = await app.inject('/readyz')
    assert.equal(ready.statusCode, 503)
    assert.match(ready.json().manifest.lastError.message, /storage refused access to blob "packages\.toml"/)
    const res = await app.inject('/pkg/a/latest')
    assert.equal(res.statusCode, 503)
    assert.equal(res.headers['retry-after'], '5')
  })
})
