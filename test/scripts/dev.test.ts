// `npm run dev` from a test: it prints a URL, serves the example package, and stops cleanly.

import { test } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { REPO, cliArgs } from '../helpers/cli.ts'
import { tempDir } from '../helpers/tmp.ts'

function alive (pid: number): boolean {
  const stat = spawnSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' }).stdout
  return stat !== '' && !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')
}

interface Dev {
  readonly child: ChildProcess
  /** stdout and stderr so far, interleaved as they came. */
  output (): string
  /** 'close': every process holding the output (npm, the wrapper, dev) has let go of it. */
  readonly closed: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Waits (up to a minute) until the output matches `pattern`. */
  waitFor (what: string, pattern: RegExp): Promise<RegExpExecArray>
}

/** `npm run dev` in a process group of its own, killed whole after the test. */
function startDev (t: TestContext): Dev {
  const child = spawn('npm', ['run', '--silent', 'dev'], { cwd: REPO, env: { ...process.env, PKG_SERVE_PORT: '0', LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  t.after(() => { try { process.kill(-(child.pid ?? 0), 'SIGKILL') } catch { /* gone */ } })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  const closed = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })))
  return {
    child,
    output: () => out,
    closed,
    async waitFor (what, pattern) {
      const deadline = Date.now() + 60_000
      for (;;) {
        const m = pattern.exec(out)
        if (m !== null) return m
        assert.ok(Date.now() < deadline && child.exitCode === null, `no ${what}:\n${out}`)
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
  }
}

test('npm run dev serves the examples and Ctrl-C stops everything it started', async (t) => {
  const dir = await tempDir(t)
  const dev = startDev(t)
  const { child, closed } = dev
  await dev.waitFor('start', /Ctrl-C stops/)
  const out = dev.output()
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
  const all = dev.output()
  // npm itself may die of the SIGINT, as it does at a terminal; what it ran must stop in order.
  assert.ok(code === 0 || signal === 'SIGINT', `npm run dev ended with ${code ?? signal ?? ''}:\n${all}`)
  assert.match(all, /stopping pkg-serve and Azurite…\nstopped\n/)
  assert.doesNotMatch(all, /^dev: /m)
  assert.equal(alive(azuritePid), false, 'Azurite is still running')
  assert.notEqual(spawnSync('curl', ['-fsS', `${url}/healthz`]).status, 0, 'pkg-serve still answers')
})

/** Every process below `pid` (children, their children…), from /proc. */
function descendants (pid: number): number[] {
  const byParent = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let stat: string
    try { stat = readFileSync(`/proc/${entry}/stat`, 'utf8') } catch { continue }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
    byParent.set(ppid, [...(byParent.get(ppid) ?? []), Number(entry)])
  }
  const out: number[] = []
  const walk = (p: number): void => { for (const c of byParent.get(p) ?? []) { out.push(c); walk(c) } }
  walk(pid)
  return out
}

test('npm run dev: its export line points publish at its Azurite, a save is uploaded once, and SIGTERM to npm alone stops everything', async (t) => {
  const dir = await tempDir(t)
  const dev = startDev(t)
  const { child, closed } = dev
  await dev.waitFor('start', /Ctrl-C stops/)
  const url = /serving at (http:\/\/localhost:\d+)/.exec(dev.output())?.[1] ?? ''

  // The printed line, run by a shell as a user would paste it, then publish from "another terminal".
  const exportLine = /^ {2}(export AZURE_STORAGE_CONNECTION_STRING=.*)$/m.exec(dev.output())?.[1]
  assert.ok(exportLine !== undefined, dev.output())
  assert.match(exportLine, /^export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=[^']+;BlobEndpoint=http:\/\/127\.0\.0\.1:\d+\/devstoreaccount1;'$/)
  const file = join(dir, 'tool.bin')
  writeFileSync(file, 'published from another terminal')
  const published = spawnSync('bash', ['-c', `${exportLine} && "$0" "$@"`, process.execPath, ...cliArgs(['publish', file, '--name', 'tool', '--tag', '1'])],
    { cwd: REPO, encoding: 'utf8', env: { ...process.env, AZURE_STORAGE_CONNECTION_STRING: undefined } })
  assert.equal(published.status, 0, published.stderr)
  const deadline = Date.now() + 30_000
  while (spawnSync('curl', ['-fsS', `${url}/pkg/tool/1`], { encoding: 'utf8' }).stdout !== 'published from another terminal') {
    assert.ok(Date.now() < deadline, 'the dev server never served what publish uploaded')
    await new Promise((resolve) => setTimeout(resolve, 200))
  }

  // A save of examples/packages.toml keeps what publish added from the other terminal.
  const examplesManifest = join(REPO, 'examples', 'packages.toml')
  const original = readFileSync(examplesManifest, 'utf8')
  t.after(() => writeFileSync(examplesManifest, original))
  writeFileSync(examplesManifest, `${original}\n# saved by ${process.pid}\n`)
  await dev.waitFor('the manifest upload', /uploaded examples\/packages\.toml as packages\.toml, keeping what publish added: \[tool\.1\]/)
  await new Promise((resolve) => setTimeout(resolve, 2500)) // the dev server polls every 2 s
  assert.equal(spawnSync('curl', ['-fsS', `${url}/pkg/tool/1`], { encoding: 'utf8' }).stdout, 'published from another terminal', 'a save dropped the published entry')
  writeFileSync(examplesManifest, original)

  // One save, one upload; saving the same bytes again uploads nothing.
  const name = `.dev-test-${process.pid}.txt`
  const example = join(REPO, 'examples', 'files', name)
  t.after(() => rmSync(example, { force: true }))
  writeFileSync(example, 'one')
  await dev.waitFor('the upload', new RegExp(`uploaded examples/files/${name.replace('.', '\\.')} as ${name.replace('.', '\\.')}`))
  writeFileSync(example, 'one')
  await new Promise((resolve) => setTimeout(resolve, 1500))
  assert.equal(dev.output().split(`uploaded examples/files/${name}`).length - 1, 1, dev.output())
  rmSync(example)

  const started = descendants(child.pid ?? 0)
  assert.ok(started.length >= 3, `expected the wrapper, the dev server and Azurite below npm: ${started.join(' ')}`)
  process.kill(child.pid ?? 0, 'SIGTERM')
  await closed
  const stillAlive = () => started.filter(alive)
  const stopDeadline = Date.now() + 20_000
  while (stillAlive().length > 0 && Date.now() < stopDeadline) await new Promise((resolve) => setTimeout(resolve, 200))
  assert.deepEqual(stillAlive(), [], `left running after SIGTERM to npm:\n${dev.output()}`)
  assert.notEqual(spawnSync('curl', ['-fsS', `${url}/healthz`]).status, 0, 'pkg-serve still answers')
})
