// The server that owns a listening app: opens the storage, binds localhost's two loopback
// addresses, reports its URL, and closes the sockets and the app in order, once.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pino } from 'pino'
import { startServer, urlFor } from '../src/server.ts'
import { StorageSpecError } from '../src/storage/open.ts'
import { tempDir } from './helpers/tmp.ts'

const logger = pino({ level: 'silent' })
const base = { container: 'pkg', endpointSuffix: 'core.windows.net', azureJson: '/nonexistent/azure.json', storageTimeout: 30, manifest: 'packages.toml', pollInterval: 0, host: 'localhost', port: 0, readConnections: 4, readChunk: 8, readAhead: 64, readMinSpeedup: 1.5 }

test('urlFor writes the host as a URL does', () => {
  assert.equal(urlFor('localhost', 8080), 'http://localhost:8080')
  assert.equal(urlFor('127.0.0.1', 1), 'http://127.0.0.1:1')
  assert.equal(urlFor('::1', 2), 'http://[::1]:2')
})

test('startServer serves a local container on both loopback addresses and closes once', async (t) => {
  const dir = await tempDir(t)
  await mkdir(join(dir, 'pkg'))
  await writeFile(join(dir, 'pkg', 'packages.toml'), "[hello.latest]\npath = 'hello.txt'\n")
  await writeFile(join(dir, 'pkg', 'hello.txt'), 'hello\n')
  const server = await startServer({ ...base, storage: dir }, { logger, env: {}, closeGraceMs: 200 })
  t.after(() => server.close())
  assert.ok(server.port > 0)
  assert.equal(server.url, `http://localhost:${server.port}`)
  assert.ok(server.addresses.includes('127.0.0.1'))
  for (const address of server.addresses) {
    const host = address.includes(':') ? `[${address}]` : address
    const res = await fetch(`http://${host}:${server.port}/pkg/hello/latest`)
    assert.equal(res.status, 200)
    assert.equal(await res.text(), 'hello\n')
    assert.equal((await fetch(`http://${host}:${server.port}/readyz`)).status, 200)
  }
  const first = server.close()
  assert.equal(server.close(), first, 'a second close shares the first')
  await first
  await assert.rejects(fetch(`http://127.0.0.1:${server.port}/healthz`), /fetch failed/)
})

test('startServer fails on bad storage before binding anything', async (t) => {
  const dir = await tempDir(t)
  await assert.rejects(startServer({ ...base, storage: join(dir, 'missing') }, { logger, env: {} }), StorageSpecError)
})

test('a port in use fails startServer with the listen error, and the app is closed', async (t) => {
  const dir = await tempDir(t)
  await mkdir(join(dir, 'pkg'))
  await writeFile(join(dir, 'pkg', 'packages.toml'), '')
  const first = await startServer({ ...base, storage: dir, host: '127.0.0.1' }, { logger, env: {}, closeGraceMs: 200 })
  t.after(() => first.close())
  await assert.rejects(
    startServer({ ...base, storage: dir, host: '127.0.0.1', port: first.port }, { logger, env: {} }),
    (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE'
  )
})
