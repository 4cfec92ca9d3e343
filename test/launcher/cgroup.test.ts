import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  cgroupPids, findOwnCgroup, isRunCgroup, joinArgv, parseMountInfo, parseProcCgroup, placeRun, populated, runCgroupsOf, stopCgroup
} from '../../src/launcher/cgroup.ts'
import { alive } from '../../src/launcher/supervise.ts'
import { cgroupRoot, testCgroup } from '../helpers/cgroup.ts'
import { until } from '../helpers/until.ts'

const root = await cgroupRoot()
const needsRoot = typeof root === 'string' ? false : root.unavailable

test('mountinfo: optional fields, escaped paths, the cgroup2 entries', () => {
  const text = [
    '31 23 0:28 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755',
    '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:10 master:1 - cgroup2 cgroup2 rw,nsdelegate',
    '65 48 0:38 /kubepods/pod1 /mnt/with\\040space rw - cgroup2 none rw',
    ''
  ].join('\n')
  assert.deepEqual(parseMountInfo(text).filter((m) => m.fsType === 'cgroup2'), [
    { root: '/', mountPoint: '/sys/fs/cgroup/unified', fsType: 'cgroup2' },
    { root: '/kubepods/pod1', mountPoint: '/mnt/with space', fsType: 'cgroup2' }
  ])
  assert.equal(parseProcCgroup('4:memory:/x\n0::/a/b\n'), '/a/b')
  assert.equal(parseProcCgroup('4:memory:/x\n'), undefined)
})

const own = await findOwnCgroup()

test('this process\'s own cgroup, found from /proc/self (no root needed)', { skip: own === undefined ? 'no cgroup v2 is mounted here' : false }, async () => {
  assert.ok(own !== undefined)
  const procs = (await readFile(join(own.dir, 'cgroup.procs'), 'utf8')).split('\n')
  assert.ok(procs.includes(String(process.pid)), `${own.dir} does not hold this process`)
  const placed = await placeRun({ action: 'install', scriptCgroup: 'pod', nsenter: false, nsenterTarget: '1' })
  assert.deepEqual(placed, { mode: 'pod', dir: join(own.dir, 'pkg-serve-run.install'), joinDir: join(own.dir, 'pkg-serve-run.install'), joinOnNode: false })
})

test('node-mode run cgroups: one per launcher, found by action with their launcher', { skip: needsRoot }, async (t) => {
  const slice = join(await testCgroup(t, 'unit'), 'pkg-serve.slice')
  for (const name of ['install@12.345', 'install', 'install@x.1', 'installer@1.2', 'other@1.2']) await mkdir(join(slice, name), { recursive: true })
  const found = await runCgroupsOf(slice, 'install')
  assert.deepEqual(found.map((c) => [c.dir, c.owner]).sort(), [[join(slice, 'install'), null], [join(slice, 'install@12.345'), { pid: 12, startTicks: 345 }]].sort())
  assert.equal(await isRunCgroup(join(slice, 'install@12.345'), 'install'), true)
  assert.equal(await isRunCgroup(join(slice, 'install@x.1'), 'install'), false)
  assert.equal(await isRunCgroup(join(slice, 'installer@1.2'), 'install'), false)
  assert.deepEqual(await runCgroupsOf(join(slice, 'none'), 'install'), [])
  const placed = await placeRun({ action: 'install', scriptCgroup: 'node', nsenter: false, nsenterTarget: '1', owner: { pid: 7, startTicks: 8 } })
  assert.ok(!('unavailable' in placed) && placed.dir.endsWith('/pkg-serve.slice/install@7.8'), JSON.stringify(placed))
})

test('a real cgroup: the shim joins it, a double fork stays in it, stopCgroup ends all (SIGKILL for who ignores SIGTERM) and removes it', { skip: needsRoot }, async (t) => {
  const dir = join(await testCgroup(t, 'unit'), 'pkg-serve-run.install')
  await mkdir(dir)
  assert.equal(await isRunCgroup(dir, 'install'), true)
  assert.equal(await isRunCgroup(dir, 'other'), false)
  assert.equal(await isRunCgroup('/tmp', 'install'), false)
  const script = '( setsid sh -c \'trap "" TERM; echo $$; exec sleep 300\' & ) ; sleep 300'
  const [file = '', ...args] = joinArgv(dir, ['/bin/sh', '-c', script])
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  const daemon = await new Promise<number>((resolve) => child.stdout.once('data', (d: Buffer) => { resolve(Number(d.toString().trim())) }))
  // The script's own `sleep 300` may start after the daemon said its PID.
  const pids = await until('the script, its sleep and the daemon in the cgroup', async () => {
    const now = await cgroupPids(dir)
    return now.length >= 3 ? now : undefined
  })
  assert.ok(pids.includes(daemon) && child.pid !== undefined && pids.includes(child.pid), `${pids.join(' ')}`)
  assert.equal(await populated(dir), true)

  const result = await stopCgroup(dir, 200)
  assert.equal(result.killed, true, 'the daemon ignores SIGTERM: it needed SIGKILL')
  assert.equal(result.removed, true)
  assert.ok(result.processes >= 3)
  assert.equal(alive(daemon), false)
  assert.equal(existsSync(dir), false)
})

test('a shim that cannot join its cgroup does not run the command', { skip: needsRoot }, async () => {
  const [file = '', ...args] = joinArgv('/nonexistent-cgroup', ['/bin/echo', 'ran'])
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const code = await new Promise((resolve) => child.once('exit', resolve))
  assert.equal(code, 125)
  assert.match(out, /cannot join the run's cgroup \/nonexistent-cgroup/)
  assert.doesNotMatch(out, /ran/)
})
