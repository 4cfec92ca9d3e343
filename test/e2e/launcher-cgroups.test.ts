// `pkg-serve run` and the run's cgroup, for real: launchers in cgroups and namespaces the test
// makes (a pod on this hybrid machine, a pod on a cgroup-v2-only node), fake nodes entered with
// nsenter, scripts that start daemons the usual way (setsid, double forks), ignore SIGTERM, or
// outlive a launcher that is SIGKILLed. Storage is a local directory: the package server is
// not what these tests are about. Needs root (cgroups, namespaces, nsenter).

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startCli } from '../helpers/cli.ts'
import type { RunningCli } from '../helpers/cli.ts'
import { asPod, cgroupRoot, inCgroup, testCgroup, withoutCgroup2 } from '../helpers/cgroup.ts'
import { writeConfigMap } from '../helpers/configmap.ts'
import { startFakeNode } from '../helpers/fake-node.ts'
import type { FakeNode } from '../helpers/fake-node.ts'
import { tempDir } from '../helpers/tmp.ts'
import { alive } from '../../src/launcher/supervise.ts'
import { startTicks } from '../../src/launcher/state.ts'

const root = await cgroupRoot()
const skip = typeof root === 'string' ? false : root.unavailable

type Ctx = Parameters<typeof tempDir>[0]

/**
 * The script: records its PIDs (its own, a double-forked setsid daemon, a process that ignores
 * SIGTERM) in $HOST/pids, says which cgroup it is in, then waits. What the test checks
 * afterwards is that none of them runs any more.
 */
const DAEMONS = `#!/bin/bash
pids="$(dirname "$0")/pids"
echo $$ >> "$pids"
( setsid sh -c 'echo $$ >> "$1"; exec sleep 300' _ "$pids" & ) </dev/null >/dev/null 2>&1
( trap '' TERM; sh -c 'echo $$ >> "$1"; exec sleep 301' _ "$pids" ) &
echo "cgroup=$(cut -d: -f3 /proc/self/cgroup | tail -n 1)"
while [ "$(wc -l < "$pids")" -lt 3 ]; do sleep 0.05; done
echo started
wait
`

interface Fixture {
  readonly node: FakeNode
  readonly stateDir: string
  /** STORAGE: a local directory with an empty manifest. */
  readonly storage: string
  /** The launcher's cgroup (the pod's). */
  readonly pod: string
  /** The fake node's root cgroup, when it has cgroup v2 alone (else undefined: the machine's). */
  readonly nodeCgroup: string | undefined
  launch (args: readonly string[], prefix?: readonly string[]): RunningCli
  pids (): Promise<number[]>
}

async function fixture (t: Ctx, actions: Record<string, string>, opts: { nodeCgroup2?: boolean, nodeWithoutCgroup2?: boolean } = {}): Promise<Fixture> {
  const pod = await testCgroup(t, 'pod')
  const nodeCgroup = opts.nodeCgroup2 === true ? await testCgroup(t, 'node') : undefined
  const node = await startFakeNode(t, 'fake-node', { cgroup: nodeCgroup, withoutCgroup2: opts.nodeWithoutCgroup2 === true })
  const dir = await tempDir(t)
  const actionsDir = join(dir, 'actions')
  const stateDir = join(dir, 'state')
  const storage = join(dir, 'storage')
  await writeConfigMap(actionsDir, actions)
  await mkdir(storage)
  await writeFile(join(storage, 'packages.toml'), '')
  return {
    node,
    stateDir,
    storage,
    pod,
    nodeCgroup,
    launch (args, prefix = inCgroup(pod)) {
      return startCli(t, [
        'run',
        '--actions-dir', actionsDir,
        '--host-dir', node.hostDir,
        '--host-path', node.hostPath,
        '--nsenter-target', String(node.pid),
        '--state-dir', stateDir,
        '--kill-grace', '1',
        '--ready-timeout', '0',
        ...args
      ], { AZURE_STORAGE_CONNECTION_STRING: undefined, PKG_SERVE_STORAGE: undefined }, { prefix })
    },
    async pids () {
      const text = await readFile(join(node.hostDir, 'pids'), 'utf8').catch(() => '')
      return text.split('\n').filter(Boolean).map(Number)
    }
  }
}

const msgIs = (prefix: string) => (l: Record<string, unknown>) => typeof l.msg === 'string' && l.msg.startsWith(prefix)
const scriptLine = (cli: RunningCli, prefix: string): string | undefined =>
  cli.logs.map((l) => l.stream !== undefined ? String(l.msg) : '').find((m) => m.startsWith(prefix))

async function status (f: Fixture, stateDir = f.stateDir): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8')) as Record<string, unknown>
}

/** SIGTERM to the launcher; then nothing the script started runs, and its cgroup is gone. */
async function stopAndCheck (f: Fixture, cli: RunningCli, runCgroup: string): Promise<void> {
  const pids = await f.pids()
  assert.equal(pids.length, 3, `the script did not record its processes: ${pids.join(' ')}`)
  assert.ok(existsSync(runCgroup), `no run cgroup at ${runCgroup}`)
  assert.deepEqual((await readFile(join(runCgroup, 'cgroup.procs'), 'utf8')).split('\n').filter(Boolean).map(Number).filter((p) => pids.includes(p)).sort(), [...pids].sort(),
    'the script and its daemons are not all in the run cgroup')
  const { code } = await cli.stop()
  assert.equal(code, 143, cli.stderr())
  assert.deepEqual(pids.filter(alive), [], 'processes the script started are still running')
  assert.equal(existsSync(runCgroup), false, 'the run cgroup was not removed')
  assert.equal((await status(f)).phase, 'stopped')
}

test('the run\'s cgroup, on a fake node', { skip }, async (t) => {
  await t.test('pod (hybrid machine: cgroup v2 at /sys/fs/cgroup/unified): a double-forked setsid daemon and a process ignoring SIGTERM end on a stop', async (t) => {
    const f = await fixture(t, { install: DAEMONS })
    const cli = f.launch(['install', f.storage])
    await cli.waitForLog((l) => l.msg === 'started')
    const runCgroup = join(f.pod, 'pkg-serve-run.install')
    assert.ok(cli.logs.some(msgIs(`the script runs in cgroup ${runCgroup} (inside the pod's cgroup`)))
    // Seen from the script (the launcher's cgroup namespace: the machine's).
    assert.ok(scriptLine(cli, 'cgroup=')?.endsWith('/pkg-serve-run.install'), scriptLine(cli, 'cgroup='))
    await stopAndCheck(f, cli, runCgroup)
  })

  await t.test('pod (cgroup v2 alone at /sys/fs/cgroup, own cgroup namespace, as on AKS): the same', async (t) => {
    const f = await fixture(t, { install: DAEMONS }, { nodeCgroup2: true })
    const cli = f.launch(['install', f.storage], asPod(f.pod))
    await cli.waitForLog((l) => l.msg === 'started')
    assert.ok(cli.logs.some(msgIs('the script runs in cgroup /sys/fs/cgroup/pkg-serve-run.install (inside the pod\'s cgroup')))
    assert.equal(scriptLine(cli, 'cgroup='), 'cgroup=/pkg-serve-run.install')
    await stopAndCheck(f, cli, join(f.pod, 'pkg-serve-run.install'))
  })

  await t.test('pod, in a container that mounts no cgroup2 of its own (runc on a hybrid host): its cgroup is found through the node, with hostPID', async (t) => {
    const f = await fixture(t, { install: DAEMONS })
    // The launcher sees no cgroup2 mount; the node it enters does, in the same cgroup namespace.
    const cli = f.launch(['install', f.storage], [...inCgroup(f.pod), ...withoutCgroup2()])
    await cli.waitForLog((l) => l.msg === 'started')
    const runCgroup = join(f.pod, 'pkg-serve-run.install')
    assert.ok(cli.logs.some(msgIs(`the script runs in cgroup /proc/${f.node.pid}/root${runCgroup} (inside the pod's cgroup`)), JSON.stringify(cli.logs.slice(0, 3)))
    assert.ok(scriptLine(cli, 'cgroup=')?.endsWith('/pkg-serve-run.install'), scriptLine(cli, 'cgroup='))
    await stopAndCheck(f, cli, runCgroup)
  })

  await t.test('--script-cgroup node: the script runs in pkg-serve.slice/ACTION@PID.START on the node, not under the launcher\'s cgroup', async (t) => {
    const f = await fixture(t, { install: DAEMONS }, { nodeCgroup2: true })
    const cli = f.launch(['--script-cgroup', 'node', 'install', f.storage], asPod(f.pod))
    await cli.waitForLog((l) => l.msg === 'started')
    // Named for this launcher: its PID and start time.
    const name = `install@${cli.child.pid ?? 0}.${startTicks(cli.child.pid ?? 0) ?? ''}`
    assert.ok(cli.logs.some(msgIs(`the script runs in cgroup /proc/${f.node.pid}/root/sys/fs/cgroup/pkg-serve.slice/${name} (on the node`)))
    // Seen from the script (the node's cgroup namespace), and on the machine's hierarchy.
    assert.equal(scriptLine(cli, 'cgroup='), `cgroup=/pkg-serve.slice/${name}`)
    const runCgroup = join(f.nodeCgroup ?? '', 'pkg-serve.slice', name)
    assert.ok(!runCgroup.startsWith(`${f.pod}/`))
    const inPod = (await readFile(join(f.pod, 'cgroup.procs'), 'utf8')).split('\n').filter(Boolean).map(Number)
    assert.deepEqual((await f.pids()).filter((p) => inPod.includes(p)), [], 'a process of the script runs in the pod\'s cgroup')
    await stopAndCheck(f, cli, runCgroup)
  })

  await t.test('a script that exits and leaves a daemon: the daemon is stopped, the success stands', async (t) => {
    const f = await fixture(t, { install: '#!/bin/sh\n( setsid sh -c \'echo $$ > "$1"; exec sleep 300\' _ "$(dirname "$0")/pids" & ) </dev/null >/dev/null 2>&1\nwhile [ ! -s "$(dirname "$0")/pids" ]; do sleep 0.05; done\necho done\n' })
    const cli = f.launch(['--exit-on-success', 'install', f.storage])
    assert.equal((await cli.exited()).code, 0, cli.stderr())
    const [daemon] = await f.pids()
    assert.ok(daemon !== undefined)
    assert.equal(alive(daemon), false, 'the daemon the script left still runs')
    const warning = cli.logs.find(msgIs('the script exited and left 1 process(es) running in its cgroup'))
    assert.ok(warning !== undefined, JSON.stringify(cli.logs.slice(-5)))
    assert.match(JSON.stringify(warning.processes), /sleep/)
    assert.equal((await status(f)).phase, 'succeeded')
    assert.equal(existsSync(join(f.pod, 'pkg-serve-run.install')), false)
  })

  // pod: the next launcher starts in place (same state dir). node: as in a restarted container,
  // whose --state-dir starts empty: what the earlier launcher was doing comes from the node.
  for (const mode of ['pod', 'node'] as const) {
    await t.test(`a launcher SIGKILLed mid-run (${mode}): the next one ends the leftovers before its script starts, and says so`, async (t) => {
      const CHECK = `#!/bin/bash
pids="$(dirname "$0")/pids"
if [ -s "$pids" ]; then
  left=""
  for p in $(cat "$pids"); do if [ -e /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status; then left="$left $p"; fi; done
  echo "leftovers:\${left:- none}"
  exit 0
fi
${DAEMONS.split('\n').slice(1).join('\n')}`
      const f = await fixture(t, { install: CHECK }, { nodeCgroup2: true })
      const args = ['--script-cgroup', mode, 'install', f.storage]
      const first = f.launch(args, asPod(f.pod))
      await first.waitForLog((l) => l.msg === 'started')
      const pids = await f.pids()
      assert.equal(pids.length, 3)
      first.child.kill('SIGKILL')
      await first.exited()
      assert.equal((await status(f)).phase, 'running')
      assert.deepEqual(pids.filter((p) => !alive(p)), [], 'the script died with its launcher: nothing to recover')

      const stateDir = mode === 'pod' ? f.stateDir : join(f.stateDir, 'restarted')
      const second = f.launch(['--state-dir', stateDir, '--exit-on-success', ...args], asPod(f.pod))
      assert.equal((await second.exited()).code, 0, second.stderr())
      assert.equal(scriptLine(second, 'leftovers:'), 'leftovers: none')
      assert.deepEqual(pids.filter(alive), [])
      // The script, its two daemons, and in pod mode nsenter (which joined the cgroup first).
      const warning = second.logs.find((l) => /^an earlier launcher of action install left [34] process\(es\) running in cgroup/.test(String(l.msg)))
      assert.ok(warning !== undefined, JSON.stringify(second.logs.slice(0, 8)))
      assert.match(String(warning.msg), /its last status: running since/)
      const s = await status(f, stateDir)
      assert.equal(s.phase, 'succeeded')
      const recovered = s.recovered as { previous: { phase: string, attempts: number }, stoppedProcesses: number, cgroups: string[] }
      assert.equal(recovered.previous.phase, 'running')
      assert.equal(recovered.previous.attempts, 1)
      assert.equal(recovered.stoppedProcesses, mode === 'pod' ? 4 : 3)
      assert.equal(recovered.cgroups.length, 1)
    })
  }

  for (const mode of ['pod', 'node'] as const) {
    await t.test(`a second launcher of the action while the first still runs (another pod, ${mode}): not an earlier run, left alone, even by its cleanup`, async (t) => {
      const f = await fixture(t, { install: DAEMONS }, { nodeCgroup2: true })
      const first = f.launch(['--script-cgroup', mode, 'install', f.storage], asPod(f.pod))
      await first.waitForLog((l) => l.msg === 'started')
      const pids = await f.pids()
      // Another pod: its own cgroup, state dir and ConfigMap; the same node, host dir and action.
      // Its script leaves a daemon, which its launcher stops: only its own.
      const other = await tempDir(t)
      await writeConfigMap(join(other, 'actions'), { install: '#!/bin/sh\n( setsid sleep 302 & ) </dev/null >/dev/null 2>&1\necho second\n' })
      const second = f.launch(['--state-dir', join(other, 'state'), '--actions-dir', join(other, 'actions'), '--script-cgroup', mode, '--exit-on-success', 'install', f.storage], asPod(await testCgroup(t, 'pod2')))
      assert.equal((await second.exited()).code, 0, second.stderr())
      assert.equal(scriptLine(second, 'second'), 'second')
      assert.ok(second.logs.some(msgIs('another launcher of action install is running on this node (PID ')), JSON.stringify(second.logs.slice(0, 6)))
      assert.ok(second.logs.some(msgIs('the script exited and left 1 process(es) running in its cgroup')), JSON.stringify(second.logs.slice(-6)))
      assert.equal(second.logs.find((l) => /earlier launcher/.test(String(l.msg))), undefined)
      const s = JSON.parse(await readFile(join(other, 'state', 'status.json'), 'utf8')) as Record<string, unknown>
      assert.equal(s.recovered, undefined)
      assert.deepEqual(pids.filter((p) => !alive(p)), [], 'the first launcher\'s script was stopped')
      await stopAndCheck(f, first, mode === 'pod' ? join(f.pod, 'pkg-serve-run.install') : join(f.nodeCgroup ?? '', 'pkg-serve.slice', `install@${first.child.pid ?? 0}.${startTicks(first.child.pid ?? 0) ?? ''}`))
    })
  }

  await t.test('no cgroup v2 mounted: the process tree, and the log says so', async (t) => {
    // Neither the launcher nor the node it enters sees a cgroup2 mount (a cgroup v1 node).
    const f = await fixture(t, { install: '#!/bin/sh\nsleep 300 &\necho $! > "$(dirname "$0")/pids"\necho started\nwait\n' }, { nodeWithoutCgroup2: true })
    const cli = f.launch(['install', f.storage], [...inCgroup(f.pod), ...withoutCgroup2()])
    await cli.waitForLog((l) => l.msg === 'started')
    assert.ok(cli.logs.some(msgIs('no cgroup v2 for the script (no cgroup v2 is mounted here')), JSON.stringify(cli.logs.slice(0, 5)))
    assert.equal((await status(f)).cgroup, null)
    const [child] = await f.pids()
    assert.ok(child !== undefined && alive(child))
    assert.equal((await cli.stop()).code, 143)
    assert.equal(alive(child), false, 'the tree walk did not end a plain background child')
  })
})
