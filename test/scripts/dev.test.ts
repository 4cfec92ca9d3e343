// `npm run dev` from a test: it prints a URL, serves the example package, and stops cleanly.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { REPO } from '../helpers/cli.ts'
import { tempDir } from '../helpers/tmp.ts'

function alive (pid: number): boolean {
  const stat = spawnSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' }).stdout
  return stat !== '' && !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')
}

test('npm run dev serves the examples and Ctrl-C stops everything it started', async (t) => {
  const dir = await tempDir(t)
  const child = spawn('npm', ['run', '--silent', 'dev'], { cwd: REPO, env: { ...process.env, PKG_SERVE_PORT: '0', LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  t.after(() => { try { process.kill(-(child.pid ?? 0), 'SIGKILL') } catch { /* gone */ } })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  // 'close': every process holding the output (npm, the wrapper, dev) has let go of it.
  const closed = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })))

  const deadline = Date.now() + 60_000
  while (!/Ctrl-C stops/.test(out)) {
    assert.ok(Date.now() < deadline && child.exitCode === null, `npm run dev did not get ready:\n${out}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  const url = /serving at (http:\/\/localhost:\d+)/.exec(out)?.[1]
  const azuritePid = Number(/Azurite \(pid (\d+)\)/.exec(out)?.[1])
  assert.ok(url !== undefined, out)
  assert.match(out, new RegExp(`curl -fsSOJ ${url}/pkg/pkg-serve-hello/1\\.0\\.0`))

  const r = spawnSync('curl', ['-fsSOJ', `${url}/pkg/pkg-serve-hello/1.0.0`], { cwd: dir, encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  const deb = await readFile(join(dir, 'pkg-serve-hello_1.0.0_all.deb'))
  assert.equal(deb.subarray(0, 8).toString(), '!<arch>\n')
  const list = JSON.parse(spawnSync('curl', ['-fsS', `${url}/pkg`], { encoding: 'utf8' }).stdout) as { packages: Array<{ name: string }> }
  assert.deepEqual(list.packages.map((p) => p.name), ['hello', 'install-hello', 'pkg-serve-hello'])

  // Ctrl-C in a terminal signals the whole process group.
  process.kill(-(child.pid ?? 0), 'SIGINT')
  const { code, signal } = await closed
  // npm itself may die of the SIGINT, as it does at a terminal; what it ran must stop in order.
  assert.ok(code === 0 || signal === 'SIGINT', `npm run dev ended with ${code ?? signal ?? ''}:\n${out}`)
  assert.match(out, /stopping pkg-serve and Azurite…\nstopped\n/)
  assert.doesNotMatch(out, /^dev: /m)
  assert.equal(alive(azuritePid), false, 'Azurite is still running')
  assert.notEqual(spawnSync('curl', ['-fsS', `${url}/healthz`]).status, 0, 'pkg-serve still answers')
})
