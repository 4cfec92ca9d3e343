import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import type { Socket } from 'node:net'
import { createHash, randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob'
import { createAzureStore } from '../../../src/storage/azure/store.ts'
import { ReadAheadBudget } from '../../../src/storage/parallel-read.ts'
import { withSharedReads } from '../../../src/storage/shared-reads.ts'
import { StorageError } from '../../../src/storage/types.ts'
import type { OpenedBlob, StorageErrorKind } from '../../../src/storage/types.ts'
import { AZURITE_ACCOUNT, AZURITE_KEY, connectionStringFor, startAzurite } from '../../helpers/azurite.ts'
import { startFront } from '../../helpers/storage-front.ts'
import { until } from '../../helpers/until.ts'

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

/** A 3 MiB blob read in 256 KiB ranges over 4 connections, over plain HTTP and over TLS. */
for (const tls of [false, true]) {
  test(`parallel ranged reads of a large blob (${tls ? 'TLS' : 'plain HTTP'}): in order, pinned, checked, retried, cancelled, within the budget`, async (t) => {
    const azurite = await startAzurite(t, { tls })
    const front = await startFront(t, azurite)
    const KiB = 1024
    const chunkBytes = 256 * KiB
    const big = randomBytes(3 * 1024 * KiB + 17)
    await azurite.put('big.bin', big)
    const container = new BlobServiceClient(`${front.blobEndpoint}`, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)).getContainerClient('pkg')
    const budget = new ReadAheadBudget(2 * 1024 * KiB)
    const store = createAzureStore({
      container,
      description: 'azurite',
      ca: azurite.certificate?.cert,
      requestTimeoutMs: 10_000,
      backoff: { initialMs: 10, maxMs: 100 },
      // Always in parallel: what is tested here is the ranges, not whether they pay.
      parallel: { connections: 4, chunkBytes, budget, minSpeedup: 0 }
    })
    t.after(() => store.close())
    const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
    const requestsFor = async (action: () => Promise<unknown>) => {
      const before = front.seen.length
      await action()
      return front.seen.slice(before).filter((r) => r.path === 'pkg/big.bin')
    }

    await t.test('open: the bytes in order, one GET then ranges pinned to its ETag, the digest checked whole', async () => {
      let opened: OpenedBlob | undefined
      const seen = await requestsFor(async () => {
        opened = await store.open?.('big.bin', { sha256: digest(big) })
        assert.ok(opened !== undefined)
        assert.equal(digest(await buffer(opened.body)), digest(big))
      })
      assert.ok(opened !== undefined)
      assert.equal(opened.props.size, big.length)
      assert.equal(seen[0]?.range, undefined, 'the first GET is the lookup')
      const ranges = seen.slice(1)
      assert.equal(ranges.length, Math.ceil(big.length / chunkBytes) - 1, JSON.stringify(seen))
      for (const r of ranges) assert.equal(r.ifMatch, opened.props.etag, 'every range is pinned')
      assert.equal(budget.inUse, 0)
      assert.ok((store.stats?.bytesRead ?? 0) >= big.length)
    })

    await t.test('a wrong digest fails the transfer before its last bytes', async () => {
      const opened = await store.open?.('big.bin', { sha256: digest(Buffer.from('other')) })
      assert.ok(opened !== undefined)
      let got = 0
      opened.body.on('data', (c: Buffer) => { got += c.length })
      await assert.rejects(buffer(opened.body), /sha256 mismatch/)
      assert.ok(got < big.length)
    })

    await t.test('read of a range of known version, with chunks cut mid-body and refused: intact bytes', async () => {
      const { etag } = await store.stat('big.bin')
      front.inject('GET', { kind: 'cut', afterBytes: 1000 }, 2, true)
      front.inject('GET', { kind: 'status', status: 503, code: 'ServerBusy' }, 2, true)
      const part = await buffer(await store.read('big.bin', { etag, size: big.length, start: 100_000, end: 2_999_999 }))
      assert.equal(digest(part), digest(big.subarray(100_000, 3_000_000)))
      assert.equal(budget.inUse, 0)
    })

    await t.test('a consumer that leaves cancels every range in flight and returns the budget', async () => {
      const opened = await store.open?.('big.bin', {})
      assert.ok(opened !== undefined)
      await new Promise<void>((resolve) => opened.body.once('readable', () => resolve()))
      opened.body.destroy()
      await until('the budget returned', () => budget.inUse === 0 ? true : undefined)
      assert.equal(store.stats?.readAheadBytes, 0)
    })

    await t.test('many downloads at once share the budget: all intact, never over it', async () => {
      let peak = 0
      const timer = setInterval(() => { peak = Math.max(peak, budget.inUse) }, 1)
      const bodies = await Promise.all(Array.from({ length: 8 }, async () => {
        const opened = await store.open?.('big.bin', {})
        assert.ok(opened !== undefined)
        return buffer(opened.body)
      }))
      clearInterval(timer)
      for (const body of bodies) assert.equal(digest(body), digest(big))
      assert.ok(peak <= budget.totalBytes, `read-ahead peaked at ${peak}`)
      assert.equal(budget.inUse, 0)
    })

    await t.test('a blob replaced mid-download: one version whole, or a failed transfer', async () => {
      const opened = await store.open?.('big.bin', {})
      assert.ok(opened !== undefined)
      const body = opened.body
      const parts: Buffer[] = []
      // Take the first bytes, then replace the blob while the rest is still to be read.
      await new Promise<void>((resolve) => body.once('data', (c: Buffer) => { parts.push(c); body.pause(); resolve() }))
      const other = randomBytes(big.length)
      await azurite.put('big.bin', other)
      body.resume()
      try {
        for await (const c of body) parts.push(c as Buffer)
        assert.equal(digest(Buffer.concat(parts)), digest(big), 'a complete transfer is the first version')
      } catch (err) {
        assert.ok(err instanceof StorageError && err.kind === 'changed', String(err))
      }
      await azurite.put('big.bin', big)
    })
  })
}
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
  const bodies = await Promise.all(Array.from({ length: 20 }, async () => shared.open?.('small.bin', {})))
  for (const b of bodies) assert.deepEqual(await buffer(b?.body ?? Readable.from([])), small)
  assert.equal(front.seen.length - before, 1, 'twenty concurrent downloads, one storage request')

  front.inject('GET', { kind: 'whole' }, 1, true)
  await rejectsWith(open('small.bin', { start: 5, end: 9 }), 'failed', /is not the one asked for: status 200 to a ranged read/)
  front.inject('GET', { kind: 'status', status: 503, code: 'ServerBusy', retryAfter: '1' }, Infinity)
  const busy = await rejectsWith(open('small.bin', {}), 'throttled', /storage is busy \(503 ServerBusy\)/)
  assert.equal(busy.retryAfterSeconds, 1)
  front.clear()
})
