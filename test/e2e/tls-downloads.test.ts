// Downloads as production runs them, over TLS (Azurite with a certificate this test makes,
// trusted through NODE_EXTRA_CA_CERTS) and over plain HTTP: `pkg-serve serve` reads storage
// through a fault-injecting front of the test's own (test/helpers/storage-front.ts), and real curl
// and wget download. Covers sha256 checks, ranges, one storage request per download, throttling
// retried, storage answers that lie about their framing, and a storage connection broken
// mid-body (resumed); through an HTTPS proxy over TLS.

import { test } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { readFile, writeFile } from 'node:fs/promises'
import { connect, createServer as createNetServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import { join } from 'node:path'
import { createServer } from 'node:tls'
import { promisify } from 'node:util'
import { connectionStringFor, startAzurite } from '../helpers/azurite.ts'
import type { Azurite } from '../helpers/azurite.ts'
import { NODE_ARGS, REPO, startCli } from '../helpers/cli.ts'
import { startFront } from '../helpers/storage-front.ts'
import { until } from '../helpers/until.ts'
import { tempDir } from '../helpers/tmp.ts'

const exec = promisify(execFile)
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
/** Longer than the 1 s the server reuses looked-up properties: the next download asks storage. */
const PAST_CACHE_MS = 1200

async function run (cmd: string, args: string[]): Promise<{ code: number, stdout: Buffer }> {
  try {
    const { stdout } = await exec(cmd, args, { encoding: 'buffer', maxBuffer: 1 << 27 })
    return { code: 0, stdout }
  } catch (err) {
    const e = err as { code?: number, stdout?: Buffer }
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? Buffer.alloc(0) }
  }
}
const curl = (args: string[]): Promise<{ code: number, stdout: Buffer }> => run('curl', ['-sS', '--max-time', '60', ...args])

/** Status, lower-cased headers and body of one request. */
async function fetchHead (args: string[]): Promise<{ status: number, headers: string, body: Buffer }> {
  const r = await curl(['-i', ...args])
  // Interim answers (100 Continue to an upload's Expect) come first: the final one is after them.
  let out = r.stdout
  for (;;) {
    const split = out.indexOf('\r\n\r\n')
    const head = out.subarray(0, split).toString('latin1').toLowerCase()
    const status = Number(/^http\/1\.1 (\d+)/.exec(head)?.[1] ?? 0)
    if (status >= 100 && status < 200 && split >= 0) {
      out = out.subarray(split + 4)
      continue
    }
    return { status, headers: head, body: out.subarray(split + 4) }
  }
}

/**
 * Sends every request at once on one connection (HTTP/1.1 pipelining) and splits what comes back
 * into responses by their Content-Length: status and body of each, in order.
 */
async function pipelined (url: string, requests: Array<{ path: string, range?: string }>): Promise<Array<{ status: number, body: Buffer }>> {
  const { hostname, port } = new URL(url)
  const socket = connect(Number(port), hostname)
  await once(socket, 'connect')
  socket.write(requests.map((r, i) => `GET ${r.path} HTTP/1.1\r\nHost: ${hostname}\r\n${r.range !== undefined ? `Range: ${r.range}\r\n` : ''}` +
    `Connection: ${i === requests.length - 1 ? 'close' : 'keep-alive'}\r\n\r\n`).join(''))
  const parts: Buffer[] = []
  for await (const part of socket) parts.push(part as Buffer)
  const all = Buffer.concat(parts)
  const responses: Array<{ status: number, body: Buffer }> = []
  for (let at = 0; at < all.length;) {
    const split = all.indexOf('\r\n\r\n', at)
    assert.ok(split > 0, `a response head at byte ${at}`)
    const head = all.subarray(at, split).toString('latin1')
    const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? NaN)
    assert.ok(Number.isSafeInteger(length), head)
    responses.push({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0), body: all.subarray(split + 4, split + 4 + length) })
    at = split + 4 + length
  }
  return responses
}

async function serveFrom (t: TestContext, azurite: Azurite, blobEndpoint: string, extra: Record<string, string> = {}, flags: string[] = []): Promise<{ url: string, cli: ReturnType<typeof startCli> }> {
  const cli = startCli(t, ['serve', '--port', '0', '--poll-interval', '0', '--storage-timeout', '3', ...flags], {
    AZURE_STORAGE_CONNECTION_STRING: connectionStringFor(blobEndpoint),
    ...(azurite.certificate !== undefined && { NODE_EXTRA_CA_CERTS: azurite.certificate.certFile }),
    ...extra
  })
  const listening = await cli.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on'))
  const url = `http://127.0.0.1:${Number(listening.port)}`
  for (let i = 0; i < 100 && (await curl(['-o', '/dev/null', '-w', '%{http_code}', `${url}/readyz`])).stdout.toString() !== '200'; i++) await sleep(100)
  return { url, cli }
}

for (const scheme of (process.env.SCHEMES ?? 'https,http').split(',')) {
  test(`downloads from storage over ${scheme}`, async (t) => {
    const azurite = await startAzurite(t, { tls: scheme === 'https' })
    const large = randomBytes(20 * 1024 * 1024 + 123)
    const mid = randomBytes(3 * 1024 * 1024 + 7)
    const small = randomBytes(1500)
    await azurite.put('large.bin', large)
    await azurite.put('mid.bin', mid)
    await azurite.put('small.bin', small)
    await azurite.put('zero.bin', Buffer.alloc(0))
    // Larger than what loopback's socket buffers take in a second (tcp_rmem allows 32 MiB):
    // a client that hangs up after one cannot have been sent all of it.
    await azurite.put('hangup.bin', Buffer.alloc(64 * 1024 * 1024, 7))
    const wrong = sha256(Buffer.from('another package'))
    await azurite.put('packages.toml', [
      `[large.good]\npath = 'large.bin'\nsha256 = '${sha256(large)}'`,
      `[large.bad]\npath = 'large.bin'\nsha256 = '${wrong}'`,
      "[mid.plain]\npath = 'mid.bin'\n",
      `[small.good]\npath = 'small.bin'\nsha256 = '${sha256(small)}'`,
      `[small.bad]\npath = 'small.bin'\nsha256 = '${wrong}'`,
      "[small.plain]\npath = 'small.bin'\n",
      "[zero.plain]\npath = 'zero.bin'\n",
      "[hangup.plain]\npath = 'hangup.bin'\n"
    ].join('\n'))
    const front = await startFront(t, azurite)
    assert.ok(front.blobEndpoint.startsWith(`${scheme}://`))
    // One storage read per download here (the request counts below assume it); parallel reads
    // have a server of their own further down.
    const { url, cli } = await serveFrom(t, azurite, front.blobEndpoint, {}, ['--read-connections', '1'])
    const dir = await tempDir(t)
    /** The storage requests for one blob made while `action` runs. */
    const storageRequests = async (action: () => Promise<unknown>): Promise<typeof front.seen> => {
      const before = front.seen.length
      await action()
      return front.seen.slice(before)
    }

    await t.test('ready', async () => {
      assert.equal((await curl(['-o', '/dev/null', '-w', '%{http_code}', `${url}/readyz`])).stdout.toString(), '200')
    })

    await t.test('a large blob arrives whole when its sha256 matches, and broken when it does not', async () => {
      // Together, and one slow: writes to clients cannot all complete at once.
      const goods = await Promise.all([[], [], ['--limit-rate', '40M']].map(async (extra) => curl([...extra, `${url}/pkg/large/good`])))
      for (const good of goods) {
        assert.equal(good.code, 0)
        assert.equal(sha256(good.stdout), sha256(large))
      }
      const bad = await curl([`${url}/pkg/large/bad`])
      assert.notEqual(bad.code, 0, 'curl reports the broken transfer')
      assert.ok(bad.stdout.length < large.length, `${bad.stdout.length} of ${large.length} bytes arrived`)
      // wget tries again from where it stopped: the rest of a version known bad is refused too.
      const wget = await run('wget', ['-q', '-O', join(dir, 'bad.bin'), `${url}/pkg/large/bad`])
      assert.notEqual(wget.code, 0, 'wget reports the broken transfer')
      const rest = await fetchHead(['-r', `${large.length - 1000}-`, `${url}/pkg/large/bad`])
      assert.equal(rest.status, 502)
      assert.match(rest.body.toString(), /sha256 mismatch/)
    })

    await t.test('one storage request per download: the GET is its own lookup', async () => {
      await sleep(PAST_CACHE_MS)
      const whole = await storageRequests(async () => {
        const r = await curl([`${url}/pkg/mid/plain`])
        assert.equal(sha256(r.stdout), sha256(mid))
      })
      assert.deepEqual(whole.map((r) => `${r.method} ${r.range ?? ''}`), ['GET '], JSON.stringify(whole))
      await sleep(PAST_CACHE_MS)
      const ranged = await storageRequests(async () => {
        const r = await curl(['-r', '100-199', `${url}/pkg/mid/plain`])
        assert.deepEqual(r.stdout, mid.subarray(100, 200))
      })
      assert.deepEqual(ranged.map((r) => `${r.method} ${r.range ?? ''}`), ['GET bytes=100-199'])
    })

    await t.test('ranges come back exact, a suffix longer than the blob is all of it, and wget -c resumes', async () => {
      const part = await curl(['-r', '1000000-1999999', `${url}/pkg/large/good`])
      assert.deepEqual(part.stdout, large.subarray(1_000_000, 2_000_000))
      const open = await curl(['-r', `${mid.length - 5}-`, `${url}/pkg/mid/plain`])
      assert.deepEqual(open.stdout, mid.subarray(mid.length - 5))
      const tail = await curl(['-r', '-10', `${url}/pkg/small/plain`])
      assert.deepEqual(tail.stdout, small.subarray(small.length - 10))
      const all = await fetchHead(['-r', '-99999999', `${url}/pkg/small/plain`])
      assert.equal(all.status, 206)
      assert.match(all.headers, new RegExp(`content-range: bytes 0-${small.length - 1}/${small.length}`))
      assert.deepEqual(all.body, small)
      const past = await fetchHead(['-r', `${mid.length}-`, `${url}/pkg/mid/plain`])
      assert.equal(past.status, 416)
      assert.match(past.headers, new RegExp(`content-range: bytes \\*/${mid.length}`))
      // An empty blob: any range is past its end (Azurite answers 206 "bytes 0--1/0" to one).
      for (const range of ['0-0', '0-']) {
        const none = await fetchHead(['-r', range, `${url}/pkg/zero/plain`])
        assert.equal(none.status, 416, range)
        assert.match(none.headers, /content-range: bytes \*\/0/)
      }
      const empty = await fetchHead([`${url}/pkg/zero/plain`])
      assert.equal(empty.status, 200)
      assert.equal(empty.body.length, 0)

      const out = join(dir, 'resumed.bin')
      await writeFile(out, mid.subarray(0, 1_000_000))
      const wget = await run('wget', ['-q', '-c', '-O', out, `${url}/pkg/mid/plain`])
      assert.equal(wget.code, 0)
      assert.equal(sha256(await readFile(out)), sha256(mid))
    })

    await t.test('small blobs: concurrent downloads are all exact; a mismatch is a 502 before any byte', async () => {
      await sleep(PAST_CACHE_MS)
      const requests = await storageRequests(async () => {
        const results = await Promise.all(Array.from({ length: 24 }, async () => curl([`${url}/pkg/small/plain`])))
        for (const r of results) assert.deepEqual(r.stdout, small)
      })
      // All ask at once: one storage read answers them (a few if some arrive after it ends).
      assert.ok(requests.length <= 4, `${requests.length} storage requests for 24 concurrent downloads`)
      const good = await Promise.all(Array.from({ length: 8 }, async () => curl([`${url}/pkg/small/good`])))
      for (const r of good) assert.deepEqual(r.stdout, small)
      const bad = await fetchHead([`${url}/pkg/small/bad`])
      assert.equal(bad.status, 502)
      assert.match(bad.body.toString(), /sha256 mismatch/)
    })

    await t.test('methods other than GET and HEAD: 405 with Allow', async () => {
      for (const method of ['DELETE', 'PUT', 'POST']) {
        const r = await fetchHead(['-X', method, `${url}/pkg/small/plain`])
        assert.equal(r.status, 405, method)
        assert.match(r.headers, /allow: get, head/)
      }
      // With a body of any type or size: still 405, never 415, 400 or 413 (the body is not read).
      const upload = join(dir, 'upload.bin')
      await writeFile(upload, randomBytes(200 * 1024))
      for (const args of [['-T', upload], ['-X', 'POST', '-d', 'x'], ['-X', 'POST', '-H', 'content-type: application/json', '-d', '{'], ['-X', 'PATCH', '--data-binary', `@${upload}`]]) {
        const r = await fetchHead([...args, `${url}/pkg/small/plain`])
        assert.equal(r.status, 405, args.join(' '))
        assert.match(r.headers, /allow: get, head/)
      }
    })

    await t.test('throttling and resets before any byte are retried: the client gets 200 and intact bytes', async () => {
      await sleep(PAST_CACHE_MS)
      front.inject('HEAD', { kind: 'status', status: 503, code: 'ServerBusy' })
      const head = await fetchHead(['-I', `${url}/pkg/mid/plain`])
      assert.equal(head.status, 200)
      assert.match(head.headers, new RegExp(`content-length: ${mid.length}`))
      const faults: Array<Parameters<typeof front.inject>[1]> = [
        { kind: 'status', status: 503, code: 'ServerBusy' },
        { kind: 'status', status: 500, code: 'OperationTimedOut' },
        { kind: 'status', status: 500, code: 'InternalError' },
        { kind: 'status', status: 429, retryAfter: '1' },
        { kind: 'reset' }
      ]
      for (const fault of faults) {
        await sleep(PAST_CACHE_MS)
        front.inject('GET', fault)
        const requests = await storageRequests(async () => {
          const r = await curl(['-f', `${url}/pkg/mid/plain`])
          assert.equal(r.code, 0, JSON.stringify(fault))
          assert.equal(sha256(r.stdout), sha256(mid), JSON.stringify(fault))
        })
        assert.deepEqual(requests.map((r) => r.fault), [fault.kind, undefined])
      }
    })

    await t.test('storage busy all along: 503 with Retry-After within the storage timeout, never 502', async () => {
      await sleep(PAST_CACHE_MS)
      front.inject('GET', { kind: 'status', status: 503, code: 'ServerBusy', retryAfter: '1' }, Infinity)
      const started = Date.now()
      const r = await fetchHead([`${url}/pkg/mid/plain`])
      front.clear()
      assert.equal(r.status, 503, r.body.toString())
      assert.match(r.headers, /retry-after: 1\r\n/)
      assert.match(JSON.parse(r.body.toString()).message, /storage is busy \(503 ServerBusy\)/)
      assert.ok(Date.now() - started < 10_000)
      assert.equal((await curl(['-f', '-o', '/dev/null', '-w', '%{http_code}', `${url}/pkg/mid/plain`])).stdout.toString(), '200')
    })

    await t.test('answers that lie about their framing fail the transfer', async () => {
      const refused = async (args: string[], what: string): Promise<void> => {
        const r = await fetchHead(args)
        assert.equal(r.status, 502, `${what}: ${r.status} ${r.body.toString().slice(0, 200)}`)
        assert.match(JSON.parse(r.body.toString()).message, /is not the one asked for/, what)
      }
      // A HEAD that under-reports the size: the GET that follows it (within the 1 s its answer is
      // reused) announces the true size, which is not the one planned.
      await sleep(PAST_CACHE_MS)
      front.inject('HEAD', { kind: 'length', delta: -100 })
      await fetchHead(['-I', `${url}/pkg/mid/plain`])
      await refused([`${url}/pkg/mid/plain`], 'HEAD under-reporting')
      const wget = await run('wget', ['-q', '-O', join(dir, 'short.bin'), `${url}/pkg/mid/plain`])
      assert.notEqual(wget.code, 0, 'wget fails too')
      // A body longer than planned.
      await sleep(PAST_CACHE_MS)
      await fetchHead(['-I', `${url}/pkg/mid/plain`])
      front.inject('GET', { kind: 'length', delta: 10 })
      await refused([`${url}/pkg/mid/plain`], 'a longer body')
      // A ranged read answered whole, and one answered with other bytes.
      await sleep(PAST_CACHE_MS)
      front.inject('GET', { kind: 'whole' }, 1, true)
      await refused(['-r', '100-199', `${url}/pkg/mid/plain`], 'a 200 to a ranged read')
      front.inject('GET', { kind: 'shift', by: 1 }, 1, true)
      await refused(['-r', '100-199', `${url}/pkg/mid/plain`], 'a shifted Content-Range')
      front.inject('GET', { kind: 'length', delta: -1 }, 1, true)
      await refused(['-r', '100-199', `${url}/pkg/mid/plain`], 'a length that disagrees with Content-Range')
    })

    await t.test('a storage connection broken mid-body is resumed from the next byte, pinned: intact bytes', async () => {
      await sleep(PAST_CACHE_MS)
      front.inject('GET', { kind: 'cut', afterBytes: 5 * 1024 * 1024 })
      const requests = await storageRequests(async () => {
        const r = await curl(['-f', `${url}/pkg/large/good`])
        assert.equal(r.code, 0)
        assert.equal(sha256(r.stdout), sha256(large))
      })
      assert.equal(requests.length, 2, JSON.stringify(requests))
      const resumed = requests[1]
      assert.ok(resumed !== undefined)
      assert.match(resumed.range ?? '', new RegExp(`^bytes=\\d+-${large.length - 1}$`))
      assert.ok(Number(/=(\d+)-/.exec(resumed.range ?? '')?.[1]) > 0)
      assert.match(resumed.ifMatch ?? '', /^"0x[0-9A-F]+"$/, 'the resumed read is pinned to the ETag')
      await cli.waitForLog((l) => typeof l.msg === 'string' && /download of \[large\.good\].* complete after 1 storage read\(s\) resumed mid-body/.test(l.msg), 5000)
    })

    await t.test('a storage body that keeps breaking breaks the client transfer: never a short file that looks complete', async () => {
      await sleep(PAST_CACHE_MS)
      // Cut after 1 MiB, and every read from the next byte on refused.
      front.inject('GET', { kind: 'cut', afterBytes: 1024 * 1024 }, 2, false)
      front.inject('GET', { kind: 'reset' }, Infinity, true)
      const r = await curl([`${url}/pkg/large/good`])
      assert.notEqual(r.code, 0)
      assert.ok(r.stdout.length < large.length)
      assert.ok(r.stdout.equals(large.subarray(0, r.stdout.length)), 'the bytes before the break are the blob\'s')
      const wget = await run('wget', ['-q', '--tries=1', '-O', join(dir, 'cut.bin'), `${url}/pkg/large/good`])
      assert.notEqual(wget.code, 0)
      front.clear()
      const logs = JSON.stringify(cli.logs)
      assert.match(logs, /download of \[large\.good\] \(blob \\"large\.bin\\"\) broken: storage connection broke after/)
    })

    await t.test('a client hanging up is an aborted download, not a storage error, logged without a stack', async () => {
      const count = async (pattern: RegExp): Promise<number> => Number(pattern.exec((await curl([`${url}/metrics`])).stdout.toString())?.[1] ?? 0)
      const interrupted = /pkg_serve_storage_errors_total\{kind="interrupted"\} (\d+)/
      const aborted = /pkg_serve_downloads_total\{result="aborted"\} (\d+)/
      const abortedRequests = /pkg_serve_http_requests_total\{method="GET",route="\/pkg\/:name\/:tag",status="aborted"\} (\d+)/
      await sleep(1000) // the transfers broken by the previous case are counted by now
      const [errorsBefore, abortedBefore, logsBefore] = [await count(interrupted), await count(aborted), cli.logs.length]
      const abortedRequestsBefore = await count(abortedRequests)
      await curl(['--max-time', '1', '--limit-rate', '1M', '-o', '/dev/null', `${url}/pkg/hangup/plain`])
      await curl(['--max-time', '1', '--limit-rate', '1M', '-o', '/dev/null', '-r', '1000-', `${url}/pkg/hangup/plain`])
      // The server sees each hang-up when its socket closes, a moment after curl gave up.
      await until('both hang-ups counted', async () => await count(aborted) >= abortedBefore + 2 ? true : undefined, 5000, 100)
      assert.equal(await count(interrupted), errorsBefore, JSON.stringify(cli.logs.slice(logsBefore).filter((l) => l.level !== 30)))
      assert.equal(await count(aborted), abortedBefore + 2, 'both hang-ups are aborted downloads')
      assert.equal(await count(abortedRequests), abortedRequestsBefore + 2, 'both hang-ups are requests too')
      for (const line of cli.logs.slice(logsBefore)) assert.ok(!JSON.stringify(line).includes('"stack"'), JSON.stringify(line))

      // One that leaves before the first byte, while storage is still being asked (busy, retry
      // after 1 s), is an aborted download too.
      await sleep(PAST_CACHE_MS)
      front.inject('GET', { kind: 'status', status: 503, code: 'ServerBusy', retryAfter: '1' }, 1)
      await curl(['--max-time', '0.3', '-o', '/dev/null', `${url}/pkg/hangup/plain`])
      await until('the early hang-up counted', async () => await count(aborted) >= abortedBefore + 3 ? true : undefined, 10_000, 100)
      assert.equal(await count(interrupted), errorsBefore)
    })

    await t.test('parallel reads (1 MiB chunks, 4 connections): curl and wget get the blob whole, every range pinned', async (t) => {
      const parallel = await serveFrom(t, azurite, front.blobEndpoint, {}, ['--read-chunk', '1', '--read-connections', '4', '--read-ahead', '8', '--read-min-speedup', '0'])
      const requests = await storageRequests(async () => {
        const r = await curl(['-f', `${parallel.url}/pkg/large/good`])
        assert.equal(r.code, 0)
        assert.equal(sha256(r.stdout), sha256(large))
      })
      const ranged = requests.slice(1)
      assert.equal(ranged.length, Math.ceil(large.length / (1024 * 1024)) - 1, JSON.stringify(requests.map((r) => r.range)))
      for (const r of ranged) assert.match(r.ifMatch ?? '', /^"0x[0-9A-F]+"$/)
      const wget = await run('wget', ['-q', '-O', join(dir, 'parallel.bin'), `${parallel.url}/pkg/large/good`])
      assert.equal(wget.code, 0)
      assert.equal(sha256(await readFile(join(dir, 'parallel.bin'))), sha256(large))
      // Downloads at once share the 8 MiB of read-ahead, handed on as views of its buffers; one
      // client is slow, so its socket's queue fills and its buffers must wait for it before any
      // other download reuses them. Every client gets the blob whole.
      const together = await Promise.all([
        curl(['-f', '--limit-rate', '8M', `${parallel.url}/pkg/large/good`]),
        ...Array.from({ length: 3 }, async () => curl(['-f', `${parallel.url}/pkg/large/good`]))
      ])
      for (const r of together) {
        assert.equal(r.code, 0)
        assert.equal(sha256(r.stdout), sha256(large))
      }
      // Pipelined on one connection, a parallel read, a range read as one, and a parallel read
      // again: each response's writes are batched, and its batches end with it; every body whole.
      await sleep(PAST_CACHE_MS)
      const lined = await pipelined(parallel.url, [{ path: '/pkg/large/good' }, { path: '/pkg/large/good', range: 'bytes=1-1048576' }, { path: '/pkg/large/good' }])
      assert.deepEqual(lined.map((r) => r.status), [200, 206, 200])
      assert.equal(sha256(lined[0]?.body ?? Buffer.alloc(0)), sha256(large))
      assert.equal(sha256(lined[1]?.body ?? Buffer.alloc(0)), sha256(large.subarray(1, 1048577)))
      assert.equal(sha256(lined[2]?.body ?? Buffer.alloc(0)), sha256(large))
      const bad = await curl([`${parallel.url}/pkg/large/bad`])
      assert.notEqual(bad.code, 0, 'a wrong digest breaks the reassembled transfer')
      const metrics = (await curl([`${parallel.url}/metrics`])).stdout.toString()
      assert.match(metrics, /pkg_serve_storage_requests_total \d+/)
      // Read-ahead lent to a broken response comes back when its connection has closed.
      await until('the read-ahead returned', async () => /pkg_serve_read_ahead_bytes 0\b/.test((await curl([`${parallel.url}/metrics`])).stdout.toString()) ? true : undefined)

      await sleep(PAST_CACHE_MS)
      // A chunk's connection cut mid-body is read on from its next byte, to the chunk's end only.
      front.inject('GET', { kind: 'cut', afterBytes: 300 * 1024 }, 1, true)
      const resumed = await storageRequests(async () => {
        const r = await curl(['-f', `${parallel.url}/pkg/large/good`])
        assert.equal(r.code, 0)
        assert.equal(sha256(r.stdout), sha256(large))
      })
      const MiB = 1024 * 1024
      const mid = resumed.filter((r) => r.range !== undefined && Number(/=(\d+)-/.exec(r.range)?.[1]) % MiB !== 0)
      assert.equal(mid.length, 1, JSON.stringify(resumed.map((r) => r.range)))
      const [from, to] = (/=(\d+)-(\d+)/.exec(mid[0]?.range ?? '') ?? []).slice(1).map(Number)
      assert.ok(from !== undefined && to !== undefined && (to + 1) % MiB === 0 && Math.floor(from / MiB) === Math.floor(to / MiB), `resumed ${mid[0]?.range ?? ''}`)

      await sleep(PAST_CACHE_MS)
      // Every ranged read refused: the client's transfer breaks (or, before its first byte, is an
      // error status), never a short file that looks complete.
      front.inject('GET', { kind: 'reset' }, Infinity, true)
      const broken = await curl(['-f', `${parallel.url}/pkg/large/good`])
      front.clear()
      assert.notEqual(broken.code, 0)
      assert.ok(broken.stdout.length < large.length)
      assert.ok(broken.stdout.equals(large.subarray(0, broken.stdout.length)), 'the bytes before the break are the blob\'s, in order')
      await until('the read-ahead returned', async () => /pkg_serve_read_ahead_bytes 0\b/.test((await curl([`${parallel.url}/metrics`])).stdout.toString()) ? true : undefined)
    })

    if (scheme !== 'https') return
    await t.test('through an HTTPS_PROXY: tunnels for downloads and the manifest, credentials never logged', async () => {
      const certificate = azurite.certificate
      assert.ok(certificate !== undefined)
      const tunnels: string[] = []
      const sockets = new Set<Socket>()
      const proxy = createNetServer((client) => {
        client.on('error', () => {})
        client.once('data', (d: Buffer) => {
          const head = d.toString('latin1')
          tunnels.push(head.split('\r\n').filter((l) => /^(CONNECT|proxy-authorization)/i.test(l)).join(' | '))
          const [, host, port] = /^CONNECT ([^:]+):(\d+) /.exec(head) ?? []
          if (!/proxy-authorization: basic dXNlcjpzM2NyM3Q=/i.test(head) || host === undefined) {
            client.end('HTTP/1.1 407 Proxy Authentication Required\r\n\r\n')
            return
          }
          const upstream = connect(Number(port), host, () => {
            client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
            client.pipe(upstream).pipe(client)
          })
          sockets.add(client).add(upstream)
          upstream.on('error', () => client.destroy())
        })
      })
      proxy.listen(0, '127.0.0.1')
      await once(proxy, 'listening')
      t.after(() => { for (const s of sockets) s.destroy(); proxy.close() })
      const proxyPort = String((proxy.address() as AddressInfo).port)
      const { url: base, cli: proxied } = await serveFrom(t, azurite, azurite.blobEndpoint, {
        HTTPS_PROXY: `http://user:s3cr3t@127.0.0.1:${proxyPort}`,
        NO_PROXY: 'localhost'
      })
      const before = tunnels.length
      const good = await curl([`${base}/pkg/large/good`])
      assert.equal(good.code, 0)
      assert.equal(sha256(good.stdout), sha256(large))
      assert.ok(tunnels.length > before, 'the download went through the proxy')
      assert.ok(tunnels.every((tunnel) => tunnel.startsWith(`CONNECT 127.0.0.1:${azurite.port} HTTP/1.1`)), tunnels.join('\n'))
      const logs = JSON.stringify(proxied.logs) + proxied.stderr()
      assert.match(logs, new RegExp(`through proxy http://127\\.0\\.0\\.1:${proxyPort}`))
      assert.ok(!logs.includes('s3cr3t'), 'the proxy password is never logged')

      // Through a tunnel the certificate is checked against the storage host, not the proxy's
      // name: the test certificate names 127.0.0.1 (and localhost), not 127.0.0.2.
      const probe = async (...args: string[]): Promise<string> => (await exec(process.execPath, [...NODE_ARGS, join(REPO, 'test/helpers/tls-probe.ts'), ...args], {
        cwd: REPO, encoding: 'utf8', env: { ...process.env, NODE_EXTRA_CA_CERTS: certificate.certFile }
      })).stdout.trim()
      const other = createServer({ key: certificate.key, cert: certificate.cert }, (s) => {
        s.on('error', () => {}).on('data', () => { s.end('HTTP/1.1 204 No Content\r\n\r\n') })
      })
      other.listen(0, '127.0.0.2')
      await once(other, 'listening')
      t.after(() => { other.close() })
      const otherPort = String((other.address() as AddressInfo).port)
      assert.match(await probe('127.0.0.1', String(azurite.port), '127.0.0.1', proxyPort, 'user:s3cr3t'), /^accepted \d{3}$/)
      assert.equal(await probe('127.0.0.2', otherPort), 'rejected ERR_TLS_CERT_ALTNAME_INVALID')
      assert.equal(await probe('127.0.0.2', otherPort, '127.0.0.1', proxyPort, 'user:s3cr3t'), 'rejected ERR_TLS_CERT_ALTNAME_INVALID')
    })
  })
}
