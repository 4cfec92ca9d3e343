// What a script prints cannot grow the launcher: a 100 MB line and a 100 MB binary stream with
// no newline pass through in 16 KiB pieces, the lines after them arrive, and the launcher's peak
// RSS (VmHWM) stays under 150 MiB, with the image's environment (its NODE_OPTIONS and
// GLIBC_TUNABLES; a first case that prints one line gives the baseline). Runs without nsenter
// (the output path is the same), so it runs without root too; as root each launcher gets a
// cgroup of its own.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { IMAGE_ENV } from '../../scripts/image-env.ts'
import { startCli } from '../helpers/cli.ts'
import type { RunningCli } from '../helpers/cli.ts'
import { cgroupRoot, inCgroup, testCgroup } from '../helpers/cgroup.ts'
import { writeConfigMap } from '../helpers/configmap.ts'
import { tempDir } from '../helpers/tmp.ts'

const MiB = 1024 * 1024
const PIECE = 16 * 1024
const useCgroup = typeof await cgroupRoot() === 'string'

type Ctx = Parameters<typeof tempDir>[0]

async function launch (t: Ctx, script: string): Promise<{ cli: RunningCli, pieces: () => number }> {
  const dir = await tempDir(t)
  await writeConfigMap(join(dir, 'actions'), { big: script })
  await mkdir(join(dir, 'storage'))
  await writeFile(join(dir, 'storage', 'packages.toml'), '')
  let pieces = 0
  const cli = startCli(t, [
    'run', '--no-nsenter', '--exit-on-success', '--ready-timeout', '0',
    '--actions-dir', join(dir, 'actions'), '--host-dir', join(dir, 'host'), '--state-dir', join(dir, 'state'),
    'big', join(dir, 'storage')
  ], { AZURE_STORAGE_CONNECTION_STRING: undefined, PKG_SERVE_STORAGE: undefined, NODE_OPTIONS: '', ...IMAGE_ENV }, {
    prefix: useCgroup ? inCgroup(await testCgroup(t, 'output')) : undefined,
    // Hundreds of megabytes of log: count the pieces, keep the rest.
    keepLine: (raw) => {
      if (raw.length < 4096) return true
      pieces++
      return false
    }
  })
  return { cli, pieces: () => pieces }
}

/** The launcher's peak resident set (VmHWM), read before it exits. */
async function peakRss (cli: RunningCli): Promise<number> {
  const status = await readFile(`/proc/${cli.child.pid ?? 0}/status`, 'utf8')
  const kib = /^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1]
  assert.ok(kib !== undefined, status)
  return Number(kib) * 1024
}

for (const { name, make, bytes } of [
  { name: 'one short line (the baseline)', make: 'echo short', bytes: 0 },
  // Exactly 6400 pieces: a line of 100 MiB is 6400 × 16 KiB.
  { name: 'a 100 MB line', make: `head -c ${100 * MiB} /dev/zero | tr '\\0' x`, bytes: 100 * MiB },
  { name: 'a 100 MB binary stream without a newline', make: `head -c ${100 * MiB} /dev/urandom | tr -d '\\n'`, bytes: undefined }
]) {
  test(`${name}: logged in pieces, the lines after it arrive, the launcher stays small`, async (t) => {
    // The script waits before it ends, so that the test reads the peak RSS of a launcher
    // that has logged everything and is still running.
    const { cli, pieces } = await launch(t, `#!/bin/sh\n${make}\necho\necho after-1\necho after-2 >&2\nsleep 2\necho end\n`)
    await cli.waitForLog((l) => l.msg === 'after-1', 120_000)
    await cli.waitForLog((l) => l.msg === 'after-2' && l.stream === 'stderr')
    const rss = await peakRss(cli)
    t.diagnostic(`${name}: launcher peak RSS ${(rss / MiB).toFixed(1)} MiB, ${pieces()} pieces logged`)
    assert.ok(rss < 150 * MiB, `peak RSS ${(rss / MiB).toFixed(1)} MiB`)
    if (bytes !== undefined) assert.equal(pieces(), bytes / PIECE, 'a piece was lost or split differently')
    else assert.ok(pieces() >= Math.floor(99 * MiB / PIECE), `only ${pieces()} pieces`)
    assert.equal((await cli.exited()).code, 0, cli.stderr())
    assert.ok(cli.logs.some((l) => l.msg === 'end'))
  })
}
