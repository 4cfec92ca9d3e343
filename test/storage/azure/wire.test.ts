import { test } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer as createHttpServer, get } from 'node:http'
import type { IncomingMessage } from 'node:http'
import { createServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import { buffer } from 'node:stream/consumers'
import { Sha256Check } from '../../../src/storage/sha256.ts'
import { StorageError } from '../../../src/storage/types.ts'
import { createWire } from '../../../src/storage/azure/wire.ts'
import type { Wire, WireBody, WireRequest, WireResponse } from '../../../src/storage/azure/wire.ts'

function bodyOf (res: WireResponse): WireBody {
  assert.ok(res.body !== undefined, `a ${res.status} answer without a body`)
  return res.body
}

type Answer = (socket: Socket, head: string, index: number) => void

/** A storage stand-in that hands every request (head text, its index on the connection) to `answer`. */
async function scripted (t: TestContext, answer: Answer): Promise<{ port: number, connections: () => number, sockets: Socket[] }> {
  const sockets: Socket[] = []
  const server = createServer((socket) => {
    sockets.push(socket)
    socket.on('error', () => {})
    let pending = ''
    let index = 0
    socket.on('data', (d: Buffer) => {
      pending += d.toString('latin1')
      for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
        const head = pending.slice(0, end)
        pending = pending.slice(end + 4)
        answer(socket, head, index++)
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return { port: (server.address() as AddressInfo).port, connections: () => sockets.length, sockets }
}

function wireTo (t: TestContext, port: number, idleTimeoutMs = 5000): Wire {
  const wire = createWire({ protocol: 'http:', hostname: '127.0.0.1', port }, { requestTimeoutMs: 2000, idleTimeoutMs })
  t.after(() => { wire.close() })
  return wire
}

const get1 = (extra: Partial<WireRequest> = {}): WireRequest => ({ method: 'GET', path: '/c/blob?sig=x', headers: { 'x-ms-version': 'v' }, what: 'blob "blob"', ...extra })
const ok = (body: string | Buffer, extra = ''): string | Buffer =>
  Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n`), Buffer.from(body)])

async function rejectsKind (promise: Promise<unknown>, kind: string, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof StorageError, String(err))
    assert.equal(err.kind, kind, err.message)
    assert.match(err.message, pattern)
    return true
  })
}

test('requests go out as written, and kept-alive connections carry the next ones', async (t) => {
  const heads: string[] = []
  const storage = await scripted(t, (socket, head) => {
    heads.push(head)
    socket.write(head.startsWith('HEAD') ? 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\netag: "e"\r\n\r\n' : ok('hello'))
  })
  const wire = wireTo(t, storage.port)

  const head = await wire.send(get1({ method: 'HEAD' }))
  assert.equal(head.status, 200)
  assert.equal(head.headers.etag, '"e"')
  assert.equal(head.body, undefined)
  for (let i = 0; i < 3; i++) {
    const res = await wire.send(get1())
    assert.equal(String(await buffer(bodyOf(res))), 'hello')
  }
  assert.equal(storage.connections(), 1, 'one connection for every request')
  assert.match(heads[1] ?? '', /^GET \/c\/blob\?sig=x HTTP\/1\.1\r\nhost: 127\.0\.0\.1:\d+\r\nx-ms-version: v$/)
  await assert.rejects(wire.send(get1({ headers: { 'if-match': 'a\r\nx: y' } })), /line break/)
})

test('a kept connection the server closed as it was reused: the request goes again on a new one, once', async (t) => {
  const storage = await scripted(t, (socket, _head, index) => {
    if (index === 0) socket.write(ok('first'))
    else socket.destroy() // the server's idle close racing our next request
  })
  const wire = wireTo(t, storage.port)
  // Three kept connections, each of which the server will close when reused.
  await Promise.all([1, 2, 3].map(async () => { await buffer(bodyOf(await wire.send(get1()))) }))
  assert.equal(storage.connections(), 3)
  assert.equal(String(await buffer(bodyOf(await wire.send(get1())))), 'first')
  assert.equal(storage.connections(), 4, 'the retry went to a new connection, not another kept one')

  // A new connection that closes unanswered is a failure, not a loop.
  const closing = await scripted(t, (socket) => { socket.destroy() })
  await assert.rejects(wireTo(t, closing.port).send(get1()), { code: 'ECONNRESET' })
  assert.equal(closing.connections(), 1)
})

test('an idle kept connection still notices the server closing it, or sending out of turn', async (t) => {
  const storage = await scripted(t, (socket) => {
    // The body's last bytes come on their own, and the connection goes back as they are read.
    socket.write(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 200000\r\n\r\n'), Buffer.alloc(100_000, 1)]))
    setTimeout(() => { socket.write(Buffer.alloc(100_000, 2)) }, 20)
    setTimeout(() => { socket.end('HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n') }, 50)
  })
  const wire = wireTo(t, storage.port)
  for (let i = 0; i < 3; i++) {
    const res = await wire.send(get1())
    assert.equal(res.status, 200, 'never the stray answer of an idle connection')
    assert.equal((await buffer(bodyOf(res))).length, 200_000)
    await new Promise((resolve) => setTimeout(resolve, 120))
  }
  assert.equal(storage.connections(), 3)
})

test('responses framed other than by Content-Length are refused, and their connection dropped', async (t) => {
  const storage = await scripted(t, (socket, _head, index) => {
    socket.write(index === 0
      ? 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'
      : 'HTTP/1.1 200 OK\r\n\r\nhello')
  })
  const wire = wireTo(t, storage.port)
  const chunked = await wire.send(get1())
  assert.equal(chunked.status, 200)
  assert.equal(chunked.body, undefined)
  const unframed = await wire.send(get1())
  assert.equal(unframed.body, undefined)
  assert.equal(storage.connections(), 2)

  const huge = await scripted(t, (socket) => { socket.write(`HTTP/1.1 200 OK\r\nx: ${'a'.repeat(70_000)}\r\n\r\n`) })
  await assert.rejects(wireTo(t, huge.port).send(get1()), /over 65536 bytes of headers/)
  const garbage = await scripted(t, (socket) => { socket.write('SSH-2.0-OpenSSH\r\n\r\n') })
  await assert.rejects(wireTo(t, garbage.port).send(get1()), /not HTTP\/1\.1/)
})

test('bytes past Content-Length are never delivered, and that connection is not reused', async (t) => {
  const storage = await scripted(t, (socket) => { socket.write(Buffer.concat([ok('hello') as Buffer, Buffer.from('EXTRA')])) })
  const wire = wireTo(t, storage.port)
  assert.equal(String(await buffer(bodyOf(await wire.send(get1())))), 'hello')
  assert.equal(String(await buffer(bodyOf(await wire.send(get1())))), 'hello')
  assert.equal(storage.connections(), 2)
})

test('a body cut short or stalled fails its stream, saying how far it got', async (t) => {
  const cut = await scripted(t, (socket) => {
    socket.write(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n'), Buffer.alloc(1000)]))
    setTimeout(() => socket.destroy(), 50)
  })
  const res = await wireTo(t, cut.port).send(get1())
  await rejectsKind(buffer(bodyOf(res)), 'unreachable', /broke after 1000 of 100000 bytes of blob "blob"/)

  const stalled = await scripted(t, (socket) => { socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789') })
  const slow = await wireTo(t, stalled.port, 200).send(get1())
  const started = Date.now()
  await rejectsKind(buffer(bodyOf(slow)), 'timeout', /sent nothing for 0 s while streaming blob "blob"/)
  assert.ok(Date.now() - started < 2000)

  const silent = await scripted(t, () => {})
  const wire = createWire({ protocol: 'http:', hostname: '127.0.0.1', port: silent.port }, { requestTimeoutMs: 150, idleTimeoutMs: 5000 })
  t.after(() => { wire.close() })
  await rejectsKind(wire.send(get1()), 'timeout', /did not answer within 150 ms for blob "blob"/)
})

/** An HTTP server that pipes the wire's body for every request into its response. */
async function relay (t: TestContext, wire: Wire, request: () => WireRequest): Promise<{ url: string, mostPending: () => number }> {
  let mostPending = 0
  const server = createHttpServer((req, res) => {
    // The most bytes a response ever held in memory, not yet taken by the kernel.
    const write = res.write.bind(res) as (chunk: Buffer, cb: () => void) => boolean
    res.write = ((chunk: Buffer, cb: () => void) => {
      const flushed = write(chunk, cb)
      mostPending = Math.max(mostPending, res.writableLength)
      return flushed
    }) as typeof res.write
    wire.send(request()).then((r) => {
      const body = r.body
      if (body === undefined) { res.writeHead(502).end(); return }
      res.writeHead(200, { 'content-length': body.contentLength })
      body.once('error', () => { res.destroy() })
      body.pipe(res)
    }, () => { res.writeHead(502).end() })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, mostPending: () => mostPending }
}

function download (url: string): Promise<{ res: IncomingMessage, bytes: Buffer, complete: boolean }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => { resolve({ res, bytes: Buffer.concat(chunks), complete: true }) })
      res.on('error', () => { resolve({ res, bytes: Buffer.concat(chunks), complete: false }) })
    }).on('error', reject)
  })
}

test('piped into a response: every byte intact, and a slow client holds storage back', async (t) => {
  const blob = randomBytes(48 * 1024 * 1024)
  const digest = createHash('sha256').update(blob).digest('hex')
  const storage = await scripted(t, (socket) => {
    socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${blob.length}\r\n\r\n`)
    // As fast as the socket takes it, in odd-sized pieces.
    let at = 0
    const more = (): void => {
      while (at < blob.length) {
        const next = Math.min(blob.length, at + 100_003)
        const flushed = socket.write(blob.subarray(at, next))
        at = next
        if (!flushed) { socket.once('drain', more); return }
      }
    }
    more()
  })
  const { url, mostPending } = await relay(t, wireTo(t, storage.port), () => get1())

  for (let i = 0; i < 2; i++) {
    const { bytes } = await download(url)
    assert.equal(bytes.length, blob.length)
    assert.equal(createHash('sha256').update(bytes).digest('hex'), digest, 'the reused read buffer never overwrote bytes in flight')
  }

  // A client that stops reading: past what the kernel's socket buffers hold, storage is held
  // back, and the relay never holds more than one read in memory.
  const res = await new Promise<IncomingMessage>((resolve) => get(url, resolve))
  res.pause()
  await new Promise((resolve) => setTimeout(resolve, 700))
  t.diagnostic(`storage sent ${(storage.sockets.reduce((n, s) => n + s.bytesWritten, 0) / 1048576).toFixed(1)} MiB in all; at most ${mostPending()} bytes waited in the relay`)
  assert.ok(mostPending() <= 256 * 1024 + 1024, `${mostPending()} bytes waited in memory`)
  const hash = createHash('sha256')
  for await (const chunk of res) hash.update(chunk as Buffer)
  assert.equal(hash.digest('hex'), digest)
})

test('a body check fails before the last bytes leave, whether read or piped', async (t) => {
  const blob = randomBytes(3 * 1024 * 1024 + 17)
  const right = createHash('sha256').update(blob).digest('hex')
  const wrong = createHash('sha256').update('other').digest('hex')
  const storage = await scripted(t, (socket) => { socket.write(ok(blob)) })
  const wire = wireTo(t, storage.port)
  let check = right
  const { url } = await relay(t, wire, () => get1({ check: new Sha256Check(check) }))

  assert.equal((await download(url)).bytes.length, blob.length)
  check = wrong
  const broken = await download(url)
  assert.equal(broken.complete, false)
  assert.ok(broken.bytes.length < blob.length, `${broken.bytes.length} of ${blob.length} bytes arrived`)

  await assert.rejects(buffer(bodyOf(await wire.send(get1({ check: new Sha256Check(wrong) })))), { name: 'IntegrityError' })
  assert.equal((await buffer(bodyOf(await wire.send(get1({ check: new Sha256Check(right) }))))).length, blob.length)

  // A small body arrives whole with its headers: the check still runs before anyone reads it.
  const small = await scripted(t, (socket) => { socket.write(ok('tiny')) })
  await assert.rejects(buffer(bodyOf(await wireTo(t, small.port).send(get1({ check: new Sha256Check(wrong) })))), { name: 'IntegrityError' })
})

test('through a proxy: plain HTTP is forwarded with the whole URL; a refused tunnel says so', async (t) => {
  const heads: string[] = []
  const proxy = await scripted(t, (socket, head) => {
    heads.push(head)
    socket.write(ok('via proxy'))
  })
  const shown = `http://127.0.0.1:${proxy.port}`
  const wire = createWire({ protocol: 'http:', hostname: 'storage.example', port: 10000, proxy: { hostname: '127.0.0.1', port: proxy.port, auth: 'u:p', shown } }, { requestTimeoutMs: 2000, idleTimeoutMs: 2000 })
  t.after(() => { wire.close() })
  assert.equal(String(await buffer(bodyOf(await wire.send(get1())))), 'via proxy')
  assert.match(heads[0] ?? '', /^GET http:\/\/storage\.example:10000\/c\/blob\?sig=x HTTP\/1\.1\r\nhost: storage\.example:10000\r\nproxy-authorization: Basic dTpw\r\n/)

  const refusing = await scripted(t, (socket, head) => {
    heads.push(head)
    socket.end('HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n')
  })
  const tls = createWire({ protocol: 'https:', hostname: 'acct.blob.core.windows.net', port: 443, proxy: { hostname: '127.0.0.1', port: refusing.port, shown: 'http://proxy' } }, { requestTimeoutMs: 2000, idleTimeoutMs: 2000 })
  t.after(() => { tls.close() })
  await rejectsKind(tls.send(get1()), 'unreachable', /^proxy http:\/\/proxy refused a tunnel to acct\.blob\.core\.windows\.net:443 \(HTTP 407: give the proxy's user:password@ in HTTPS_PROXY\)$/)
  assert.equal(heads[1], 'CONNECT acct.blob.core.windows.net:443 HTTP/1.1\r\nhost: acct.blob.core.windows.net:443')
})
