import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { joinArgv } from '../../src/launcher/cgroup.ts'
import { alive, runScript } from '../../src/launcher/supervise.ts'
import type { ScriptLog } from '../../src/launcher/supervise.ts'
import { cgroupRoot, testCgroup } from '../helpers/cgroup.ts'
import { until } from '../helpers/until.ts'

const root = await cgroupRoot()

function collect (): ScriptLog & { lines: string[], warnings: string[] } {
  const lines: string[] = []
  const warnings: string[] = []
  return {
    lines,
    warnings,
    line (stream, text) { lines.push(`${stream}: ${text}`) },
    warn (_fields, message) { warnings.push(message) }
  }
}

test('the script\'s lines as they come, on both streams, and its exit code', async () => {
  const log = collect()
  const run = runScript('/bin/sh', ['-c', 'echo one; echo two >&2; printf three; exit 4'], {}, log, { graceMs: 1000 })
  const result = await run.done
  assert.equal(result.exitCode, 4)
  assert.equal(result.stopped, false)
  assert.deepEqual(log.lines.sort(), ['stderr: two', 'stdout: one', 'stdout: three'])
})

test('a command that cannot start: 127 and a line that says why', async () => {
  const log = collect()
  const result = await runScript('/nonexistent/script', [], {}, log, { graceMs: 1000 }).done
  assert.equal(result.exitCode, 127)
  assert.match(log.lines.join('\n'), /cannot start \/nonexistent\/script/)
})

test('without a cgroup: stop ends the script\'s process tree (no root needed)', async () => {
  const log = collect()
  const run = runScript('/bin/sh', ['-c', 'sleep 300 & echo $!; wait'], {}, log, { graceMs: 1000 })
  const child = await new Promise<number>((resolve) => {
    const timer = setInterval(() => {
      const line = log.lines.find((l) => /^stdout: \d+$/.test(l))
      if (line !== undefined) { clearInterval(timer); resolve(Number(line.slice(8))) }
    }, 10)
  })
  assert.ok(alive(child))
  const result = await run.stop(1000)
  assert.equal(result.stopped, true)
  assert.equal(result.signal ?? String(result.exitCode), 'SIGTERM')
  assert.equal(alive(child), false)
})

test('with a cgroup: a daemon left behind when the script exits is stopped, with a warning, and the cgroup removed', { skip: typeof root === 'string' ? false : root.unavailable }, async (t) => {
  const dir = join(await testCgroup(t, 'supervise'), 'pkg-serve-run.install')
  await mkdir(dir)
  const log = collect()
  const [file = '', ...args] = joinArgv(dir, ['/bin/sh', '-c', '( setsid sleep 300 & ) </dev/null >/dev/null 2>&1; echo done'])
  const result = await runScript(file, args, {}, log, { cgroup: dir, graceMs: 1000 }).done
  assert.equal(result.exitCode, 0)
  assert.deepEqual(log.lines, ['stdout: done'])
  assert.match(log.warnings.join('\n'), /left 1 process\(es\) running in its cgroup/)
  assert.equal(existsSync(dir), false)
})

// With a cgroup this failed every time before the fix; without one (the fallback), signals sent
// back to back coalesce, so that case stands as a check only.
for (const how of ['with a cgroup', 'without a cgroup'] as const) {
  test(`${how}: stop sends each of the script's processes one SIGTERM, not one per way of finding it`, { skip: how === 'without a cgroup' || typeof root === 'string' ? false : root.unavailable }, async (t) => {
    const dir = how === 'with a cgroup' ? join(await testCgroup(t, 'supervise'), 'pkg-serve-run.once') : undefined
    if (dir !== undefined) await mkdir(dir)
    const terms = join(await mkdtemp(join(tmpdir(), 'pkg-serve-terms-')), 'terms')
    t.after(async () => { await rm(dirname(terms), { recursive: true, force: true }) })
    const log = collect()
    // A script that records every SIGTERM at once (bash runs a trap straight away in `wait`) and
    // goes on, waiting on a new sleep (not spinning): a second SIGTERM would be a second line.
    // SIGKILL ends it after the grace period.
    const script = ['/bin/bash', '-c', `trap 'echo term >> ${terms}' TERM; echo ready; while :; do sleep 300 & wait $!; done`]
    const [file = '', ...args] = dir !== undefined ? joinArgv(dir, script) : script
    const run = runScript(file, args, {}, log, { cgroup: dir, graceMs: 500 })
    await until('the script ready', () => log.lines.includes('stdout: ready') ? true : undefined)
    const result = await run.stop(500)
    assert.equal(result.stopped, true)
    assert.deepEqual((await readFile(terms, 'utf8')).trim().split('\n'), ['term'])
  })
}
