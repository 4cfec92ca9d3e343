// The app's one error handler, through inject: every failure keeps its true status and answers
// {statusCode, error, message}; storage problems are never a 404 unless the blob is missing;
// internal errors hide their message from the client but not from the log.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { TestContext } from 'node:test'
import { pino } from 'pino'
import { buildApp } from '../src/app.ts'
import { createLocalStore } from '../src/storage/local.ts'
import { StorageError } from '../src/storage/types.ts'
import type { StorageErrorKind } from '../src/storage/types.ts'
import { tempDir } from './helpers/tmp.ts'

const MANIFEST = "[tool.latest]\npath = 'tool.bin'\n"

/** An app over a real local container whose blob reads fail the way `fail()` says (else pass through). */
async function appWithStorage (t: TestContext, fail: () => StorageError | undefined) {
  const dir = join(await tempDir(t), 'pkg')
  await mkdir(dir)
  await writeFile(join(dir, 'packages.toml'), MANIFEST)
  await writeFile(join(dir, 'tool.bin'), 'tool bytes')
  const local = createLocalStore(dir)
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({ write (chunk: Buffer, _enc, cb) { lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>); cb() } })
  const store = {
    ...local,
    description: local.description,
    stat: async (path: string) => {
      const err = path === 'packages.toml' ? undefined : fail()
      if (err !== undefined) throw err
      return local.stat(path)
    },
    read: async (...args: Parameters<typeof local.read>) => {
      const err = args[0] === 'packages.toml' ? undefined : fail()
      if (err !== undefined) throw err
      return local.read(...args)
    }
  }
  const app = await buildApp({ store, manifestPath: 'packages.toml', pollIntervalSeconds: 0 }, { loggerInstance: pino({ level: 'info' }, sink) })
  app.get('/boom', async () => { throw new Error('secret internal detail') })
  app.get('/teapot', async (_request, reply) => reply.code(418).send(Object.assign(new Error('short and stout'), { statusCode: 418 })))
  app.get('/with-headers', async () => {
    throw Object.assign(new Error('busy'), { statusCode: 503, headers: { 'retry-after': '7' } })
  })
  t.after(() => app.close())
  await app.ready()
  return { app, lines }
}

const cases: Array<[StorageErrorKind, number, RegExp]> = [
  ['not-found', 404, /upload the blob or fix packages\.toml/],
  ['denied', 502, /refused this server's identity .*Storage Blob Data Reader/],
  ['unreachable', 502, /storage is unreachable/],
  ['timeout', 504, /try again later/],
  ['changed', 503, /changed in storage while it was being read/],
  ['failed', 502, /storage failed/]
]

for (const [kind, status, message] of cases) {
  test(`a storage "${kind}" failure answers ${status} with a message that says what to do`, async (t) => {
    const { app } = await appWithStorage(t, () => new StorageError(kind, `blob "tool.bin" ${kind}`, { status: kind === 'denied' ? 403 : 500 }))
    for (const method of ['GET', 'HEAD'] as const) {
      const res = await app.inject({ method, url: '/pkg/tool/latest' })
      assert.equal(res.statusCode, status, `${method}: ${res.body}`)
      assert.equal(res.headers['content-disposition'], undefined)
      if (method === 'GET') {
        const body = res.json<{ statusCode: number, error: string, message: string }>()
        assert.equal(body.statusCode, status)
        assert.ok(body.error.length > 0)
        assert.match(body.message, message)
        assert.equal(Number(res.headers['content-length']), Buffer.byteLength(res.body))
      }
      if (kind === 'changed') assert.equal(res.headers['retry-after'], '1')
    }
  })
}

test('the same app serves the blob when storage answers', async (t) => {
  const { app } = await appWithStorage(t, () => undefined)
  const res = await app.inject({ method: 'GET', url: '/pkg/tool/latest' })
  assert.equal(res.statusCode, 200)
  assert.equal(res.body, 'tool bytes')
})

test('an unexpected error is a 500 whose detail stays in the log', async (t) => {
  const { app, lines } = await appWithStorage(t, () => undefined)
  const res = await app.inject({ method: 'GET', url: '/boom' })
  assert.equal(res.statusCode, 500)
  assert.deepEqual(res.json(), { statusCode: 500, error: 'Internal Server Error', message: 'internal error: see the server log' })
  const logged = lines.find((l) => l.level === 50 && String(l.msg).includes('GET /boom failed'))
  assert.ok(logged !== undefined, JSON.stringify(lines))
  assert.match(String(logged.msg), /secret internal detail/)
})

test('a client error keeps its status and message; an error\'s own headers are sent', async (t) => {
  const { app } = await appWithStorage(t, () => undefined)
  const teapot = await app.inject({ method: 'GET', url: '/teapot' })
  assert.equal(teapot.statusCode, 418)
  assert.deepEqual(teapot.json(), { statusCode: 418, error: "I'm a Teapot", message: 'short and stout' })
  const busy = await app.inject({ method: 'GET', url: '/with-headers' })
  assert.equal(busy.statusCode, 503)
  assert.equal(busy.headers['retry-after'], '7')
  assert.equal(busy.json<{ message: string }>().message, 'busy')
})

test('an unknown route is a 404 that points to the package list, with a long URL cut short', async (t) => {
  const { app } = await appWithStorage(t, () => undefined)
  const res = await app.inject({ method: 'GET', url: '/nothing/here' })
  assert.equal(res.statusCode, 404)
  assert.match(res.json<{ message: string }>().message, /no route GET \/nothing\/here; try GET \/pkg/)
  const long = await app.inject({ method: 'GET', url: `/${'x'.repeat(5000)}` })
  assert.equal(long.statusCode, 404)
  assert.ok(long.json<{ message: string }>().message.length < 400)
})
