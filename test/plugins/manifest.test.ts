import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { FastifyInstance } from 'fastify'
import { localApp } from '../helpers/app.ts'
import { until } from '../helpers/until.ts'

const POLL_SECONDS = 0.1

async function readyz (app: FastifyInstance) {
  return (await app.inject('/readyz')).json()
}

/** Waits until the manifest has been checked `n` more times. */
async function pollsAfter (app: FastifyInstance, n: number): Promise<void> {
  let last = (await readyz(app)).manifest.checkedAt
  for (let seen = 0; seen < n;) {
    await until('a manifest check', async () => {
      const now = (await readyz(app)).manifest.checkedAt
      return now !== last ? now : undefined
    }).then((now) => { last = now; seen++ })
  }
}

test('hot reload: a new entry is served within a poll; broken manifests never replace the good one', async (t) => {
  const good = "[a.latest]\npath = 'a.txt'\n"
  const { app, put } = await localApp(t, { 'packages.toml': good, 'a.txt': 'A', 'b.txt': 'B' }, { pollIntervalSeconds: POLL_SECONDS })
  assert.equal((await app.inject('/pkg/b/latest')).statusCode, 404)

  await put('packages.toml', good + "[b.latest]\npath = 'b.txt'\n")
  // Counted in polls, not in time (the machine may be slow): the second check after the change
  // began after it, and from then on the new entry is served.
  await pollsAfter(app, 2)
  assert.equal((await app.inject('/pkg/b/latest')).statusCode, 200)

  const broken: Array<[string, RegExp]> = [
    ["[a.latest]\npath = 'a.txt'\n[b.latest\n", /line 3, column \d+: TOML syntax error/],
    ["[a.latest]\npath = 'a.txt'\ncolour = 'red'\n", /\[a\.latest\] key "colour": unknown key/],
    ["[a.latest]\npath = '../../etc/passwd'\n", /\[a\.latest\] key "path": must not contain "\." or "\.\." segments/],
    ["['a b'.latest]\npath = 'a.txt'\n", /\['a b'\]: package name must match/],
    ['\u0000\u0001binary garbage', /TOML syntax error/]
  ]
  for (const [text, expected] of broken) {
    const goodEtag = (await readyz(app)).manifest.etag
    await put('packages.toml', text)
    const status = await until('the rejection', async () => {
      const body = await readyz(app)
      return body.manifest.lastError !== null ? body : undefined
    })
    assert.match(status.manifest.lastError.message, expected)
    assert.equal(status.ready, true, 'still ready: the last good manifest is served')
    assert.equal(status.manifest.etag, goodEtag)
    assert.equal((await app.inject('/pkg/b/latest')).body, 'B')
    assert.equal((await app.inject('/pkg/a/latest')).body, 'A')
    // Repair before the next case, so each rejection is observed on its own.
    await put('packages.toml', good + "[b.latest]\npath = 'b.txt'\n" + `# ${Math.random()}\n`)
    await until('the repair', async () => (await readyz(app)).manifest.lastError === null ? true : undefined)
  }

  const metrics = (await app.inject('/metrics')).body
  assert.match(metrics, /pkg_serve_manifest_reloads_total\{result="rejected"\} [5-9]/)
})

test('an unchanged manifest is not downloaded again', async (t) => {
  const { app } = await localApp(t, { 'packages.toml': "[a.latest]\npath = 'a.txt'\n", 'a.txt': 'A' }, { pollIntervalSeconds: POLL_SECONDS })
  const first = await readyz(app)
  await pollsAfter(app, 3)
  const later = await readyz(app)
  assert.equal(later.manifest.loadedAt, first.manifest.loadedAt, 'the manifest was not reloaded')
  assert.notEqual(later.manifest.checkedAt, first.manifest.checkedAt, 'but it was checked')
  assert.match((await app.inject('/metrics')).body, /pkg_serve_manifest_reloads_total\{result="unchanged"\} ([3-9]|\d\d)/)
})
