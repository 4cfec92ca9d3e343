// `pkg-serve run` for real: a fake node (own mount and UTS namespaces) entered through nsenter,
// real scripts, real wget against the package server backed by Azurite. As root every launcher
// runs in a cgroup of its own; without root the tests that do not need nsenter run with
// --no-nsenter, so a non-root run still covers the launcher.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { join } from 'node:path'
import { startAzurite } from '../helpers/azurite.ts'
import type { Azurite } from '../helpers/azurite.ts'
import { startCli } from '../helpers/cli.ts'
import type { RunningCli } from '../helpers/cli.ts'
import { writeConfigMap } from '../helpers/configmap.ts'
import { NEEDS_ROOT, isRoot, startFakeNode } from '../helpers/fake-node.ts'
import type { FakeNode } from '../helpers/fake-node.ts'
import { tempDir } from '../helpers/tmp.ts'
import { inCgroup, testCgroup } from '../helpers/cgroup.ts'
import { thisLauncher } from '../../src/launcher/state.ts'

const PACKAGE = Buffer.from('#!/bin/sh\necho "tool 1.0 installed"\n')
const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex')

interface Fixture {
  /** The fake node, when the launcher enters one (root); else the script runs here (--no-nsenter). */
  readonly node: FakeNode | undefined
  /** The host dir as the launcher sees it. */
  readonly hostDir: string
  /** The hostname the script sees. */
  readonly hostname: string
  readonly actionsDir: string
  readonly stateDir: string
  launch (args: readonly string[], extraEnv?: Record<string, string>): RunningCli
}

type Ctx = Parameters<typeof startFakeNode>[0]

async function fixture (t: Ctx, azurite: Azurite, actions: Record<string, string>): Promise<Fixture> {
  const node = isRoot ? await startFakeNode(t) : undefined
  const dir = await tempDir(t)
  const actionsDir = join(dir, 'actions')
  const stateDir = join(dir, 'state')
  const hostDir = node?.hostDir ?? join(dir, 'host')
  await writeConfigMap(actionsDir, actions)
  // A cgroup per launcher: concurrent tests never share the run cgroup of an action.
  const prefix = isRoot ? inCgroup(await testCgroup(t, 'launcher')) : undefined
  const where = node === undefined
    ? ['--no-nsenter', '--host-dir', hostDir]
    : ['--host-dir', node.hostDir, '--host-path', node.hostPath, '--nsenter-target', String(node.pid)]
  return {
    node,
    hostDir,
    hostname: node?.hostname ?? hostname(),
    actionsDir,
    stateDir,
    launch (args, extraEnv = {}) {
      return startCli(t, [
        'run',
        '--actions-dir', actionsDir,
        ...where,
        '--state-dir', stateDir,
        '--kill-grace', '1',
        ...args
      ], { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString, ...extraEnv }, { prefix })
    }
  }
}

const msgIs = (prefix: string) => (l: Record<string, unknown>) => typeof l.msg === 'string' && l.msg.startsWith(prefix)
const scriptLines = (cli: RunningCli): string[] => cli.logs.filter((l) => l.stream !== undefined).map((l) => String(l.msg))

async function status (f: Fixture): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(f.stateDir, 'status.json'), 'utf8')) as Record<string, unknown>
}

function portAnswers (port: number): boolean {
  return spawnSync('curl', ['-s', '-o', '/dev/null', '--max-time', '2', `http://127.0.0.1:${port}/healthz`]).status === 0
}

test('pkg-serve run on a fake node (as root) or here (--no-nsenter)', async (t) => {
  const azurite = await startAzurite(t)
  const container = await azurite.container('pkg')
  await container.getBlockBlobClient('tools/tool-1.0.sh').uploadData(PACKAGE)
  await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from(`[tool.'1.0']\npath = 'tools/tool-1.0.sh'\nsha256 = '${sha256(PACKAGE)}'\n`))

  await t.test('the script runs on the node, downloads its package and gets its args; the port closes after success', { skip: isRoot ? false : NEEDS_ROOT }, async (t) => {
    const f = await fixture(t, azurite, {
      install: `#!/bin/bash
set -euo pipefail
echo "host=$(hostname) args=$# [$1] [$2] [$3]"
cd "$(mktemp -d)"
wget -q "localhost:$PKG_SERVE_RUN_PORT/pkg/tool/1.0" -O tool.sh
sha256sum tool.sh
sh tool.sh
echo "to stderr" >&2
echo "secret=\${AZURE_STORAGE_CONNECTION_STRING:-none}"
# shellcheck source=/dev/null
. "$(dirname "$0")/lib.sh"
greet
`,
      'lib.sh': 'greet() { echo "hello from a helper in the same ConfigMap"; }\n'
    })
    const cli = f.launch(['install', 'devstoreaccount1', 'one', 'two words', '--force'])
    const done = await cli.waitForLog(msgIs('done:'))
    assert.equal(done.level, 30)
    const lines = scriptLines(cli)
    assert.ok(lines.includes('host=fake-node args=3 [one] [two words] [--force]'), lines.join('\n'))
    assert.ok(lines.includes(`${sha256(PACKAGE)}  tool.sh`), lines.join('\n'))
    assert.ok(lines.includes('tool 1.0 installed'))
    assert.ok(lines.includes('hello from a helper in the same ConfigMap'), 'the other actions were not copied to the host')
    assert.ok(lines.includes('secret=none'), 'the container environment leaked into the script')
    const stderrLine = cli.logs.find((l) => l.msg === 'to stderr')
    assert.equal(stderrLine?.stream, 'stderr')
    const exit = cli.logs.find(msgIs('action install exited with code 0 after'))
    assert.ok(exit !== undefined)

    const s = await status(f)
    assert.equal(s.phase, 'succeeded')
    assert.equal(s.exitCode, 0)
    assert.equal(s.attempts, 1)
    assert.deepEqual(s.args, ['one', 'two words', '--force'])
    assert.ok(existsSync(join(f.stateDir, 'ready')))
    assert.ok(existsSync(join(f.stateDir, 'heartbeat')), 'no heartbeat for the liveness probe')
    assert.equal((await readFile(join(f.hostDir, 'install'))).toString().split('\n')[0], '#!/bin/bash')

    const port = Number(s.port)
    assert.ok(port > 0)
    assert.equal(portAnswers(port), false, 'the package server still answers after success')
    assert.equal(cli.child.exitCode, null, 'the launcher should idle until SIGTERM')
    assert.equal((await cli.stop()).code, 0)
  })

  await t.test('a failing script: its exit code is the launcher\'s, not ready', async (t) => {
    const f = await fixture(t, azurite, { install: '#!/bin/sh\necho "failing on $(hostname)"\nexit 3\n' })
    const cli = f.launch(['install', 'devstoreaccount1'])
    const { code } = await cli.exited()
    assert.equal(code, 3)
    assert.ok(scriptLines(cli).includes(`failing on ${f.hostname}`))
    assert.ok(cli.logs.some(msgIs('action install exited with code 3 after')))
    assert.equal(existsSync(join(f.stateDir, 'ready')), false)
    assert.equal((await status(f)).phase, 'failed')
  })

  await t.test('a launcher that fails before its first run says so in its status, not "starting"', async (t) => {
    const f = await fixture(t, azurite, { install: '#!/bin/sh\n' })
    const cli = f.launch(['nope', 'devstoreaccount1'])
    assert.notEqual((await cli.exited()).code, 0)
    for (const file of [join(f.stateDir, 'status.json'), join(f.hostDir, '.pkg-serve-runs', 'nope.json')]) {
      const s = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>
      assert.equal(s.phase, 'failed', file)
      assert.match(String(s.message), /no action "nope" in .*; the actions there are: install/)
    }
  })

  await t.test('a status that another action left in a shared state dir is not taken for this action\'s', async (t) => {
    const f = await fixture(t, azurite, { install: '#!/bin/sh\necho ran\n' })
    // Another action's launcher, still running (this test process stands for it), mid-run.
    await mkdir(f.stateDir, { recursive: true })
    await writeFile(join(f.stateDir, 'status.json'), JSON.stringify({ phase: 'running', action: 'other', args: [], attempts: 1, launcher: thisLauncher(), updatedAt: new Date().toISOString() }))
    const cli = f.launch(['--exit-on-success', 'install', 'devstoreaccount1'])
    assert.equal((await cli.exited()).code, 0, cli.stderr())
    assert.ok(!cli.logs.some(msgIs('another launcher of action install')), 'another action\'s launcher taken for one of this action')
    assert.ok(!cli.logs.some((l) => /the earlier launcher|an earlier launcher/.test(String(l.msg))))
    assert.equal((await status(f)).recovered, undefined)
  })

  await t.test('--on-failure retry retries with backoff until the script succeeds', async (t) => {
    const f = await fixture(t, azurite, {
      install: `#!/bin/sh
f="$(dirname "$0")/attempts"; n=$(cat "$f" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$f"
echo "attempt $n"
[ "$n" -ge 3 ]
`
    })
    const cli = f.launch(['--on-failure', 'retry', '--retry-delay', '0.2', '--retry-max-delay', '0.4', 'install', 'devstoreaccount1'])
    // 0.2 s, then 0.4 s, less up to 20% jitter.
    await cli.waitForLog((l) => /^retrying action install in 0\.2s/.test(String(l.msg)))
    assert.equal(existsSync(join(f.stateDir, 'ready')), false)
    assert.equal((await status(f)).phase, 'retrying')
    await cli.waitForLog((l) => /^retrying action install in 0\.[34]s/.test(String(l.msg)))
    await cli.waitForLog(msgIs('done:'))
    assert.deepEqual(scriptLines(cli), ['attempt 1', 'attempt 2', 'attempt 3'])
    const s = await status(f)
    assert.equal(s.phase, 'succeeded')
    assert.equal(s.attempts, 3)
    assert.ok(existsSync(join(f.stateDir, 'ready')))
    await cli.stop()
  })

  await t.test('--once skips a script that already succeeded, and runs it again when it or its args change', async (t) => {
    const f = await fixture(t, azurite, { install: '#!/bin/sh\necho "ran with $*" >> "$(dirname "$0")/runs.log"\n' })
    const runs = async (): Promise<string[]> => (await readFile(join(f.hostDir, 'runs.log'), 'utf8').catch(() => '')).split('\n').filter(Boolean)
    const once = async (args: string[]): Promise<RunningCli> => {
      const cli = f.launch(['--once', '--exit-on-success', ...args])
      assert.equal((await cli.exited()).code, 0, cli.stderr())
      return cli
    }
    await once(['install', 'devstoreaccount1', 'a'])
    const skipped = await once(['install', 'devstoreaccount1', 'a'])
    assert.ok(skipped.logs.some(msgIs('action install already succeeded on this node')))
    assert.equal((await status(f)).phase, 'skipped')
    assert.ok(existsSync(join(f.stateDir, 'ready')), 'a skipped run is ready')
    assert.deepEqual(await runs(), ['ran with a'])

    await once(['install', 'devstoreaccount1', 'b'])
    assert.deepEqual(await runs(), ['ran with a', 'ran with b'])
    await once(['--force', 'install', 'devstoreaccount1', 'b'])
    assert.deepEqual(await runs(), ['ran with a', 'ran with b', 'ran with b'])
    await writeConfigMap(f.actionsDir, { install: '#!/bin/sh\necho "v2 ran with $*" >> "$(dirname "$0")/runs.log"\n' })
    await once(['install', 'devstoreaccount1', 'b'])
    assert.deepEqual(await runs(), ['ran with a', 'ran with b', 'ran with b', 'v2 ran with b'])
    // The env variable reads true and false as such.
    const fromEnv = f.launch(['--exit-on-success', 'install', 'devstoreaccount1', 'b'], { PKG_SERVE_ONCE: 'false' })
    assert.equal((await fromEnv.exited()).code, 0)
    assert.equal((await runs()).length, 5)
  })

  await t.test('--watch reruns the script when the ConfigMap changes, without a restart', async (t) => {
    const f = await fixture(t, azurite, { install: '#!/bin/sh\necho "version one on $(hostname)"\n' })
    const cli = f.launch(['--watch', '--watch-interval', '0.1', 'install', 'devstoreaccount1'])
    await cli.waitForLog(msgIs('done:'))
    await writeConfigMap(f.actionsDir, { install: '#!/bin/sh\necho "version two on $(hostname)"\n' })
    await cli.waitForLog((l) => l.msg === `version two on ${f.hostname}`)
    const s = await status(f)
    assert.equal(s.scriptSha256, sha256('#!/bin/sh\necho "version two on $(hostname)"\n'))
    await cli.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('done:') && cli.logs.indexOf(l) > cli.logs.findIndex((x) => x.msg === `version two on ${f.hostname}`))
    assert.equal((await status(f)).phase, 'succeeded')
    assert.equal(cli.child.exitCode, null)
    await cli.stop()
  })

  await t.test('--keep-serving keeps the port open after success, and /metrics counts the run', async (t) => {
    const f = await fixture(t, azurite, { install: '#!/bin/sh\nwget -q -O /dev/null "$PKG_SERVE_RUN_URL/pkg/tool/1.0"\n' })
    const cli = f.launch(['--keep-serving', '--on-failure', 'retry', 'install', 'devstoreaccount1'])
    await cli.waitForLog(msgIs('done: still serving on port'))
    const port = Number((await status(f)).port)
    assert.ok(portAnswers(port))
    const metrics = spawnSync('curl', ['-fsS', `http://127.0.0.1:${port}/metrics`], { encoding: 'utf8' }).stdout
    assert.match(metrics, /pkg_serve_script_runs_total\{result="succeeded"\} 1/)
    assert.match(metrics, /pkg_serve_downloads_total\{result="complete"\} 1/)
    assert.equal((await cli.stop()).code, 0)
    assert.equal(portAnswers(port), false)
  })

  await t.test('a --once record that cannot be written is a warning: the success stands', async (t) => {
    const f = await fixture(t, azurite, { install: '#!/bin/sh\necho ran\n' })
    // A file where the records' directory should be: no write can succeed, root or not.
    await mkdir(f.hostDir, { recursive: true })
    await writeFile(join(f.hostDir, '.pkg-serve-once'), 'in the way')
    const cli = f.launch(['--once', '--exit-on-success', 'install', 'devstoreaccount1'])
    assert.equal((await cli.exited()).code, 0, cli.stderr())
    const warning = cli.logs.find(msgIs('cannot write the --once record in'))
    assert.equal(warning?.level, 40)
    assert.match(String(warning.msg), /the action succeeded, but the next start will run it again/)
    assert.equal((await status(f)).phase, 'succeeded')
    assert.ok(existsSync(join(f.stateDir, 'ready')))
  })

  await t.test('SIGTERM during a script ends its whole process tree and closes the server', { skip: isRoot ? false : NEEDS_ROOT }, async (t) => {
    const f = await fixture(t, azurite, {
      install: `#!/bin/bash
pids="$(dirname "$0")/pids"
sleep 300 & echo $! >> "$pids"
( trap '' TERM; sleep 301 ) & echo $! >> "$pids"
setsid sleep 302 & echo $! >> "$pids"
bash -c 'sleep 303 & echo $! >> "$1"; wait' _ "$pids" &
echo $! >> "$pids"
echo started
wait
`
    })
    const cli = f.launch(['--kill-grace', '1', 'install', 'devstoreaccount1'])
    await cli.waitForLog((l) => l.msg === 'started')
    // The script prints "started" after it wrote every PID but the last background one's child's.
    let pids: number[] = []
    while (pids.length < 5) {
      pids = (await readFile(join(f.hostDir, 'pids'), 'utf8')).split('\n').filter(Boolean).map(Number)
      if (pids.length < 5) await sleep(20)
    }
    assert.equal(pids.length, 5)
    const port = Number((await status(f)).port)
    assert.ok(portAnswers(port))

    const started = Date.now()
    const { code } = await cli.stop()
    assert.equal(code, 143)
    assert.ok(Date.now() - started < 10_000)
    const alive = pids.filter((pid) => {
      try {
        const stat = spawnSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' }).stdout
        return stat !== '' && !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')
      } catch { return false }
    })
    assert.deepEqual(alive, [], 'processes the script started are still running')
    assert.equal(portAnswers(port), false)
    assert.equal((await status(f)).phase, 'stopped')
    assert.ok(cli.logs.some(msgIs('action install stopped (pkg-serve is stopping)')))
  })
})
