// Hostile input, with a fixed seed: thousands of generated requests (paths, encodings, NUL,
// overlong segments, unicode, prototype names, bad and multiple ranges, odd validators) through
// the app, and garbage straight onto a real socket. Never a 5xx, never a byte of a blob the
// manifest does not name, and the server keeps serving.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { listen } from '../../src/http/listen.ts'
import { localApp } from '../helpers/app.ts'

const SEED = 0x5eed2026
const CASES = 4000

/** mulberry32: a small, fixed-seed PRNG, so every run tries the same cases. */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const SECRET = 'UNNAMED-SECRET-BLOB'
const OUTSIDE = 'OUTSIDE-THE-CONTAINER'
const FILES = {
  'packages.toml': "[tool.latest]\npath = 'tool.bin'\n[tool.'1.0']\npath = 'dir/tool-1.0.bin'\n['__proto__'.x]\npath = 'proto.bin'\n",
  'tool.bin': 'TOOL-LATEST-BYTES',
  'dir/tool-1.0.bin': 'TOOL-1.0-BYTES',
  'proto.bin': 'PROTO-BYTES',
  'secret.bin': SECRET,
  'dir/secret.bin': SECRET
}

test(`fuzz: ${CASES} generated requests (seed ${SEED.toString(16)})`, async (t) => {
  const { app, root } = await localApp(t, FILES)
  await writeFile(join(root, 'outside.bin'), OUTSIDE)
  const random = prng(SEED)
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T
  const int = (n: number): number => Math.floor(random() * n)

  const segments = [
    'tool', 'latest', '1.0', 'x', '__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString',
    'secret.bin', 'dir', 'outside.bin', '..', '.', '%2e%2e', '%2E%2E', '..%2f', '..%2F', '%2f', '%5c', '..\\', '%00', '%',
    '%c0%ae%c0%ae', '%e2%80%ae', 'é', '%C3%A9', '\u202e', '%252e%252e', '%25', '.%2e', '%2e.', 'pkg', '', ' ', '%20',
    'tool%00', 'latest%0d%0aX-Injected:%201', '?', '#', ';', 'a'.repeat(200), 'b'.repeat(2000)
  ]
  const ranges = [
    undefined, 'bytes=0-3', 'bytes=-5', 'bytes=3-', 'bytes=0-0,2-3', 'bytes=5-2', 'bytes=abc', 'bytes=', 'bytes=--1',
    'bytes=0-99999999999999999999999', 'bytes=99999999999999999999-', 'items=0-1', 'bytes=0-1,3-4,6-7', `bytes=${'0-1,'.repeat(500)}0-1`,
    'bytes = 0-1', 'bytes=-0', 'bytes=0--1', '\u00ff'
  ]
  const validators = [undefined, '*', '"x"', 'W/"x"', 'garbage', 'Mon, 01 Jan 1990 00:00:00 GMT', '"a", "b", *', 'not a date at all']
  const methods = ['GET', 'GET', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'] as const

  let fiveHundreds = 0
  let rejectedByClient = 0
  const statuses = new Map<number, number>()
  for (let i = 0; i < CASES; i++) {
    const path = '/' + Array.from({ length: 1 + int(5) }, () => pick(segments)).join(pick(['/', '/', '/', '//', '\\']))
    const url = random() < 0.8 ? `/pkg${path}` : path
    const headers: Record<string, string> = {}
    const range = pick(ranges)
    if (range !== undefined) headers.range = range
    const ifRange = pick(validators)
    if (ifRange !== undefined && random() < 0.3) headers['if-range'] = ifRange
    const inm = pick(validators)
    if (inm !== undefined && random() < 0.3) headers['if-none-match'] = inm
    if (random() < 0.1) headers['if-modified-since'] = pick(validators) ?? ''
    let res
    try {
      res = await app.inject({ method: pick(methods), url, headers })
    } catch {
      rejectedByClient++ // light-my-request refuses some inputs a socket would carry; the raw cases cover those
      continue
    }
    statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
    if (res.statusCode >= 500) {
      fiveHundreds++
      assert.fail(`${url} ${JSON.stringify(headers)} → ${res.statusCode} ${res.body.slice(0, 200)}`)
    }
    assert.ok(!res.body.includes(SECRET) && !res.body.includes(OUTSIDE), `${url} leaked an unnamed blob`)
    for (const value of Object.values(res.headers)) assert.ok(!String(value).includes('X-Injected'), `${url}: header injection`)
    if (res.statusCode === 200 || res.statusCode === 206) {
      assert.ok(['TOOL-LATEST-BYTES', 'TOOL-1.0-BYTES', 'PROTO-BYTES'].some((b) => b.includes(res.body)) || res.body.startsWith('{') || res.body.startsWith('#'), `${url}: unexpected body ${res.body.slice(0, 80)}`)
    }
  }
  t.diagnostic(`statuses: ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}; refused by the injector: ${rejectedByClient}`)
  assert.equal(fiveHundreds, 0)
  assert.equal((await app.inject('/pkg/tool/latest')).body, 'TOOL-LATEST-BYTES')
})

/** Sends raw bytes, returns the status line (or '' if the server closed without answering). */
function raw (port: number, bytes: Buffer | string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let out = ''
    socket.setTimeout(5000, () => socket.destroy())
    socket.on('data', (c: Buffer) => { out += c.toString('latin1') })
    socket.on('error', () => {})
    socket.on('close', () => resolve(out.split('\r\n')[0] ?? ''))
    socket.end(bytes)
  })
}

test('fuzz: garbage on a real socket', async (t) => {
  const { app } = await localApp(t, FILES)
  const listener = await listen(app.routing, { host: '127.0.0.1', port: 0, closeGraceMs: 100 })
  t.after(() => listener.close())
  const random = prng(SEED ^ 0xabcdef)
  const garbage: Array<Buffer | string> = [
    'GARBAGE\r\n\r\n',
    'GET\r\n\r\n',
    'GET /pkg/tool/latest\r\n\r\n',
    'GET /pkg/tool/latest HTTP/9.9\r\nHost: x\r\n\r\n',
    'GET /pkg/tool/latest HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n',
    'GET /pkg/\u0000/latest HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET http://evil.example/pkg/tool/latest HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /pkg/tool/latest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n',
    `GET /pkg/tool/latest HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`,
    `GET /pkg/tool/latest HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 3000 }, (_, i) => `X-${i}: y`).join('\r\n')}\r\n\r\n`,
    `GET /${'a'.repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    'GET /pkg/tool/latest HTTP/1.1\r\nHost: x\r\nRange: bytes=\u00ff\u00fe\r\n\r\n',
    'POST /pkg/tool/latest HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\nxx'
  ]
  for (let i = 0; i < 200; i++) {
    const bytes = Buffer.alloc(1 + Math.floor(random() * 300))
    for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256)
    garbage.push(random() < 0.5 ? Buffer.concat([Buffer.from('GET /pkg/'), bytes, Buffer.from(' HTTP/1.1\r\nHost: x\r\n\r\n')]) : bytes)
  }
  const seen = new Map<string, number>()
  for (const g of garbage) {
    const line = await raw(listener.port, g)
    seen.set(line.slice(0, 12) || '(closed)', (seen.get(line.slice(0, 12) || '(closed)') ?? 0) + 1)
    assert.doesNotMatch(line, /^HTTP\/1\.1 5\d\d/, `5xx for ${String(g).slice(0, 80)}`)
  }
  t.diagnostic(`answers: ${JSON.stringify(Object.fromEntries(seen))}`)
  const health = await raw(listener.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  assert.equal(health, 'HTTP/1.1 200 OK')
})
