import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { listen, serverTimeouts } from '../../src/http/listen.ts'

const handler = (_req: unknown, res: { end: (s: string) => void }): void => { res.end('ok') }

test('localhost is 127.0.0.1 and ::1 on one port, whatever the resolver says', async (t) => {
  const l = await listen(handler, { host: 'localhost', port: 0, closeGraceMs: 100 })
  t.after(() => l.close())
  assert.deepEqual(l.addresses, ['127.0.0.1', '::1'])
  for (const host of ['127.0.0.1', '::1']) {
    const res = await fetch(`http://${host.includes(':') ? `[${host}]` : host}:${l.port}/`)
    assert.equal(await res.text(), 'ok')
  }
  // Host names are case-insensitive.
  const upper = await listen(handler, { host: 'LOCALHOST', port: 0, closeGraceMs: 100 })
  t.after(() => upper.close())
  assert.deepEqual(upper.addresses, ['127.0.0.1', '::1'])
})

test('server timeouts are set, and a client that never finishes its headers is cut', async (t) => {
  assert.ok(serverTimeouts.headersTimeout > 0 && serverTimeouts.headersTimeout <= 30_000)
  assert.ok(serverTimeouts.requestTimeout > 0 && serverTimeouts.keepAliveTimeout > 0 && serverTimeouts.socketTimeout > 0)
  const l = await listen(handler, { host: '127.0.0.1', port: 0, closeGraceMs: 100, timeouts: { headersTimeout: 300, requestTimeout: 600 } })
  t.after(() => l.close())
  const started = Date.now()
  const answer = await new Promise<string>((resolve) => {
    const socket = connect(l.port, '127.0.0.1')
    let out = ''
    socket.on('data', (c: Buffer) => { out += c.toString() })
    socket.on('close', () => resolve(out))
    socket.on('error', () => {})
    socket.write('GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ')
  })
  const took = Date.now() - started
  assert.ok(took < 3000, `cut after ${took} ms`)
  assert.match(answer, /^HTTP\/1\.1 408/)
})
