import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import type { Socket } from 'node:net'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { BlobServiceClient } from '@azure/storage-blob'
import { createAzureStore } from '../../../src/storage/azure/store.ts'
import { withSharedReads } from '../../../src/storage/shared-reads.ts'
import { StorageError } from '../../../src/storage/types.ts'
import type { StorageErrorKind } from '../../../src/storage/types.ts'
import { connectionStringFor, startAzurite } from '../../helpers/azurite.ts'
import { startFront } from '../../helpers/storage-front.ts'

async function rejectsWith (promise: Promise<unknown>, kind: StorageErrorKind, pattern?: RegExp): Promise<StorageError> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof StorageError, `expected StorageError, got ${String(err)}`)
    assert.equal(err.kind, kind, err.message)
    if (pattern !== undefined) assert.match(err.message, pattern)
    return err
  }
  assert.fail(`expected a ${kind} StorageError`)
}

async function freePortWithNothingListening (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise<void>((resolve) => server.close(() => resolve()))
  assert.ok(typeof address === 'object' && address !== null)
  return address.port
}

test('Azure store against Azurite', async (t) => {
  const azurite = await startAzurite(t)
  const container = await azurite.container('pkg')
  const store = createAzureStore({ container, description: 'azurite' })
  const data = Buffer.alloc(300_000, 7)
  data.write('start', 0)
  await container.getBlockBlobClient('dir/blob.bin').uploadData(data, { blobHTTPHeaders: { blobContentType: 'application/x-test' } })

  await t.test('stat gives size, ETag, date and content type', async () => {
    const p = await store.stat('dir/blob.bin')
    assert.equal(p.size, data.length)
    assert.match(p.etag, /^"0x[0-9A-F]+"$/)
    assert.ok(p.lastModified instanceof Date)
    assert.equal(p.contentType, 'application/x-test')
  })

  await t.test('read streams the whole blob or an inclusive range, pinned to the ETag', async () => {
    const { etag } = await store.stat('dir/blob.bin')
    assert.deepEqual(await buffer(await store.read('dir/blob.bin', { etag })), data)
    assert.deepEqual(await buffer(await store.read('dir/blob.bin', { etag, start: 2, end: 4 })), data.subarray(2, 5))
    assert.deepEqual(await buffer(await store.read('dir/blob.bin', { etag, start: 299_990 })), data.subarray(299_990))
  })

  await t.test('a read of a replaced blob fails as "changed"', async () => {
    const { etag } = await store.stat('dir/blob.bin')
    await container.getBlockBlobClient('dir/blob.bin').uploadData(Buffer.from('other'))
    await rejectsWith(store.read('dir/blob.bin', { etag }), 'changed')
  })

  await t.test('a missing blob is "not-found" and names the blob', async () => {
    await rejectsWith(store.stat('nope.deb'), 'not-found', /blob "nope\.deb" in container "pkg" does not exist/)
    await rejectsWith(store.readText('nope.toml'), 'not-found')
  })

  await t.test('a missing container is "not-found" and says so', async () => {
    const other = createAzureStore({ container: azurite.service.getContainerClient('absent'), description: 'x' })
    await rejectsWith(other.readText('packages.toml'), 'not-found', /container/)
  })

  await t.test('readText downloads once, then answers unchanged with one conditional request', async () => {
    await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from("[a.b]\npath = 'x'\n"))
    const first = await store.readText('packages.toml')
    assert.ok(first.changed)
    assert.equal(first.text, "[a.b]\npath = 'x'\n")
    assert.deepEqual(await store.readText('packages.toml', first.etag), { changed: false })
    await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from('# changed\n'))
    const second = await store.readText('packages.toml', first.etag)
    assert.ok(second.changed)
    assert.equal(second.text, '# changed\n')
    assert.notEqual(second.etag, first.etag)
  })

  await t.test('a wrong account key is "denied" (403), not "not-found"', async () => {
    const wrongKey = Buffer.alloc(64, 1).toString('base64')
    const service = BlobServiceClient.fromConnectionString(connectionStringFor(azurite.blobEndpoint, wrongKey), { retryOptions: { maxTries: 1 } })
    const denied = createAzureStore({ container: service.getContainerClient('pkg'), description: 'x' })
    const err = await rejectsWith(denied.stat('dir/blob.bin'), 'denied', /refused access/)
    assert.equal(err.status, 403)
    await rejectsWith(denied.readText('packages.toml'), 'denied')
  })

  await t.test('no storage listening is "unreachable"', async () => {
    const port = await freePortWithNothingListening()
    const service = BlobServiceClient.fromConnectionString(connectionStringFor(`http://127.0.0.1:${port}/devstoreaccount1`), { retryOptions: { maxTries: 1 } })
    const gone = createAzureStore({ container: service.getContainerClient('pkg'), description: 'x' })
    await rejectsWith(gone.stat('dir/blob.bin'), 'unreachable', /unreachable/)
    await rejectsWith(gone.readText('packages.toml'), 'unreachable')
  })
})

test('a refusal from something on the way (no x-ms-request-id), or a 407, is "unreachable", not our identity', async (t) => {
  let status = 403
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.on('data', () => {
      socket.write(`HTTP/1.1 ${status} Refused\r\ncontent-length: 0\r\n\r\n`)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => { for (const s of sockets) s.destroy(); server.close() })
  const address = server.address()
  assert.ok(typeof address === 'object' && address !== null)
  const service = BlobServiceClient.fromConnectionString(connectionStringFor(`http://127.0.0.1:${address.port}/devstoreaccount1`), { retryOptions: { maxTries: 1 } })
  const store = createAzureStore({ container: service.getContainerClient('pkg'), description: 'x' })
  t.after(() => store.close())
  await rejectsWith(store.stat('a.bin'), 'unreachable', /^something on the way to storage \(a proxy or firewall: the answer is not from Azure Storage\) refused blob "a\.bin" in container "pkg" \(403\)$/)
  await rejectsWith(store.readText('packages.toml'), 'unreachable', /not from Azure Storage/)
  status = 407
  await rejectsWith(store.stat('a.bin'), 'unreachable', /wants credentials for blob "a\.bin" in container "pkg" \(407\): give its user:password@ in HTTPS_PROXY/)
  await rejectsWith(store.readText('packages.toml'), 'unreachable', /\(407\)/)
})

test('open: one GET is the lookup; shared reads join it; answers that lie are refused', async (t) => {
  const azurite = await startAzurite(t)
  const small = Buffer.alloc(10_000, 3)
  await azurite.put('small.bin', small, { contentType: 'application/x-small' })
  const front = await startFront(t, azurite)
  const service = BlobServiceClient.fromConnectionString(connectionStringFor(front.blobEndpoint))
  const azure = createAzureStore({ container: service.getContainerClient('pkg'), description: 'x', requestTimeoutMs: 3000, backoff: { initialMs: 10, maxMs: 50 } })
  t.after(() => azure.close())
  const open = azure.open?.bind(azure)
  assert.ok(open !== undefined)

  const whole = await open('small.bin', {})
  assert.deepEqual(await buffer(whole.body), small)
  assert.deepEqual([whole.start, whole.end, whole.props.size, whole.props.contentType], [0, small.length - 1, small.length, 'application/x-small'])
  const part = await open('small.bin', { start: 100, end: 20_000 })
  assert.deepEqual([part.start, part.end, part.props.size], [100, small.length - 1, small.length])
  assert.deepEqual(await buffer(part.body), small.subarray(100))

  const shared = withSharedReads(azure, { statTtlMs: 1000, coalesceMaxBytes: 256 * 1024 })
  const before = front.seen.length
  const bodies = await Promise.all(Array.from({ length: 20 }, async () => await shared.open?.('small.bin', {})))
  for (const b of bodies) assert.deepEqual(await buffer(b?.body ?? Readable.from([])), small)
  assert.equal(front.seen.length - before, 1, 'twenty concurrent downloads, one storage request')

  front.inject('GET', { kind: 'whole' }, 1, true)
  await rejectsWith(open('small.bin', { start: 5, end: 9 }), 'failed', /is not the one asked for: status 200 to a ranged read/)
  front.inject('GET', { kind: 'status', status: 503, code: 'ServerBusy', retryAfter: '1' }, Infinity)
  const busy = await rejectsWith(open('small.bin', {}), 'throttled', /storage is busy \(503 ServerBusy\)/)
  assert.equal(busy.retryAfterSeconds, 1)
  front.clear()
})
