// The real image, built from docker/Dockerfile by scripts/image.sh (CI builds it before the
// tests), run with podman as the DaemonSet runs it: privileged, host PID and network, the
// actions ConfigMap and the host dir as mounts, against Azurite on 127.0.0.1. The script runs
// once inside the container (--no-nsenter) and once on a fake node (namespaces this test makes
// itself, never PID 1), downloads its package from the launcher's server, and the readiness
// probe's file appears; SIGTERM to the container stops the script's processes. The image's
// contents are checked too: production dependencies only, no tests, no .git, the Node major the
// Dockerfile names.

import { test } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { startAzurite } from '../helpers/azurite.ts'
import { REPO } from '../helpers/cli.ts'
import { writeConfigMap } from '../helpers/configmap.ts'
import { startFakeNode } from '../helpers/fake-node.ts'
import { IMAGE, imageSkip, podman, requireImage, startContainer } from '../helpers/image.ts'
import type { Container } from '../helpers/image.ts'
import { tempDir } from '../helpers/tmp.ts'

const PACKAGE = Buffer.from('#!/bin/sh\necho "tool 1.0 installed"\n')
const PACKAGE_SHA256 = createHash('sha256').update(PACKAGE).digest('hex')

// Runs on the node (through nsenter), where wget is: the name and tag in the URL, the file it
// downloaded is the one it runs.
const ON_NODE = `#!/bin/bash
set -euo pipefail
echo "host=$(hostname) args=$*"
cd "$(mktemp -d)"
wget -q "localhost:$PKG_SERVE_RUN_PORT/pkg/tool/1.0" -O tool.sh
sha256sum tool.sh
sh tool.sh
`
// Runs in the container (--no-nsenter): bookworm-slim has neither wget nor curl, but node.
const IN_POD = `#!/bin/bash
set -euo pipefail
echo "in the image: $(test -x /app/dist/cli.js && echo yes) args=$*"
node -e '
  const { createHash } = require("node:crypto")
  fetch(process.env.PKG_SERVE_RUN_URL + "/pkg/tool/1.0").then(async (r) => {
    if (r.status !== 200) throw new Error("HTTP " + r.status)
    console.log(createHash("sha256").update(Buffer.from(await r.arrayBuffer())).digest("hex") + "  tool.sh")
  })'
`
// Starts processes that outlive a careless launcher (one in a session of its own), records their
// PIDs next to itself in the host dir, and each records the SIGTERM it gets: SIGKILL from runc
// when the container goes would leave no record, so only signals passed down the chain podman ->
// tini -> launcher -> script count.
const LONG = `#!/bin/bash
set -euo pipefail
dir=$(dirname "$0")
trap 'echo script >> "$dir/long.terms"; exit 0' TERM
echo "$$" > "$dir/long.pids"
loop='trap "echo $1 >> $0; exit 0" TERM; while :; do sleep 0.2; done'
setsid bash -c "$loop" "$dir/long.terms" setsid & echo "$!" >> "$dir/long.pids"
bash -c "$loop" "$dir/long.terms" child & echo "$!" >> "$dir/long.pids"
echo "started"
wait
`

/** The script's own output line, as the launcher logs it (it may reach podman's pipe after the ready file). */
const scriptSaid = async (c: Container, line: string): Promise<void> => {
  await c.waitForLog((l) => l.stream !== undefined && l.msg === line)
}

/** The readiness probe of deploy/base/daemonset.yaml, run in the container. */
const ready = (c: Container): boolean => podman(['exec', c.name, 'test', '-f', '/tmp/pkg-serve/ready']).status === 0

async function untilReady (c: Container): Promise<void> {
  // A guard against hanging, not a timing assertion: the script takes about a second.
  for (let i = 0; i < 600 && !ready(c); i++) {
    if (c.child.exitCode !== null) throw new Error(`the container exited (${c.child.exitCode}); last lines: ${JSON.stringify(c.logs.slice(-8))}`)
    await sleep(200)
  }
  assert.ok(ready(c), `no ready file; last lines: ${JSON.stringify(c.logs.slice(-8))}`)
}

/** SIGTERM, as the kubelet stops a pod (no SIGKILL follows: the container must exit by itself). */
async function terminate (c: Container): Promise<number | null> {
  assert.equal(podman(['kill', '--signal', 'TERM', c.name]).status, 0)
  return c.exited()
}

function alive (pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

test(`the image ${IMAGE}, built from docker/Dockerfile`, { skip: imageSkip() }, async (t) => {
  requireImage()
  const dockerfile = await readFile(join(REPO, 'docker/Dockerfile'), 'utf8')
  const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { version: string, devDependencies: Record<string, string> }
  const lock = JSON.parse(await readFile(join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean, devOptional?: boolean, optional?: boolean, peer?: boolean }> }
  const pkgServe = (args: string[]) => podman(['run', '--rm', '--pull=never', '--entrypoint', 'pkg-serve', IMAGE, ...args])

  await t.test('pkg-serve --help and --version', () => {
    const help = pkgServe(['--help'])
    assert.equal(help.status, 0, help.stderr)
    for (const command of ['serve', 'run', 'publish', 'validate']) assert.match(help.stdout, new RegExp(`^ +${command} `, 'm'))
    const version = pkgServe(['--version'])
    assert.equal(version.status, 0, version.stderr)
    assert.equal(version.stdout.trim(), pkg.version)
    // The entrypoint is `pkg-serve run`: its own help, and bad input is one line.
    const runHelp = podman(['run', '--rm', '--pull=never', IMAGE, '--help'])
    assert.match(runHelp.stdout, /^Usage: pkg-serve run /)
    const missing = podman(['run', '--rm', '--pull=never', IMAGE])
    assert.notEqual(missing.status, 0)
    assert.equal(missing.stderr.trim().split('\n').length, 1, missing.stderr)
  })

  await t.test('runs the Node major the Dockerfile names, with nsenter, bash and tini', () => {
    const major = /^ARG NODE_IMAGE=node:(\d+)-/m.exec(dockerfile)?.[1]
    assert.ok(major !== undefined, 'ARG NODE_IMAGE=node:MAJOR-... in docker/Dockerfile')
    const r = podman(['run', '--rm', '--pull=never', '--entrypoint', 'bash', IMAGE, '-c', 'node --version && command -v nsenter tini'])
    assert.equal(r.status, 0, r.stderr)
    const [node, nsenter, tini] = r.stdout.trim().split('\n')
    assert.match(node ?? '', new RegExp(`^v${major}\\.`))
    assert.ok(nsenter !== undefined && tini !== undefined)
  })

  await t.test('holds production dependencies only: no dev dependencies, tests, .git or the build\'s npm config', async (t) => {
    const mount = podman(['image', 'mount', IMAGE])
    assert.equal(mount.status, 0, mount.stderr)
    t.after(() => podman(['image', 'unmount', IMAGE]))
    const root = mount.stdout.trim()
    const app = join(root, 'app')
    assert.ok(existsSync(join(app, 'dist/cli.js')))
    assert.ok(existsSync(join(app, 'node_modules/fastify/package.json')), 'production dependencies are there')
    // The lockfile says which packages only development needs (a devDependency that a production
    // dependency needs too, like yaml, is not one of them); the image has exactly the others.
    const locked = Object.entries(lock.packages).filter(([path]) => path.startsWith('node_modules/'))
    const dev = locked.filter(([, p]) => p.dev === true).map(([path]) => path)
    const prod = locked.filter(([, p]) => p.dev !== true && p.devOptional !== true && p.optional !== true && p.peer !== true).map(([path]) => path)
    assert.ok(dev.length > 0 && prod.length > 0)
    assert.deepEqual(dev.filter((path) => existsSync(join(app, path))), [], 'development-only packages in the image')
    assert.deepEqual(prod.filter((path) => !existsSync(join(app, path, 'package.json'))), [], 'production packages missing from the image')
    for (const name of Object.keys(pkg.devDependencies)) {
      if (dev.includes(`node_modules/${name}`)) assert.ok(!existsSync(join(app, 'node_modules', name)), name)
    }
    const everything = await readdir(app, { recursive: true })
    assert.deepEqual(everything.filter((p) => p.split('/').includes('.git')), [], '.git in the image')
    const ours = everything.filter((p) => !p.startsWith('node_modules/') && p !== 'node_modules')
    assert.deepEqual(ours.filter((p) => /(^|\/)test(\/|$)|\.test\.[cm]?[jt]s$|\.ts$/.test(p)), [], 'tests or TypeScript sources in /app')
    assert.deepEqual((await readdir(app)).sort(), ['dist', 'node_modules', 'package.json'])
    // npm's CA was lent to the build through a mount: nothing of it stays.
    assert.deepEqual(await readdir(join(root, 'usr/local/etc')), [])
  })

  const azurite = await startAzurite(t)
  const env = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString }
  const data = await tempDir(t)
  await writeFile(join(data, 'tool-1.0.sh'), PACKAGE)

  await t.test('pkg-serve publish from the image, against Azurite on loopback', async () => {
    await azurite.container('pkg')
    const r = podman(['run', '--rm', '--pull=never', '--network=host', '-e', 'AZURE_STORAGE_CONNECTION_STRING', '-v', `${data}:/data:ro`,
      '--entrypoint', 'pkg-serve', IMAGE, 'publish', '/data/tool-1.0.sh', '--name', 'tool', '--tag', '1.0', '--sha256'], env)
    assert.equal(r.status, 0, r.stdout + r.stderr)
  })

  /** The DaemonSet's pod: deploy/base/daemonset.yaml's securityContext, host namespaces and mounts. */
  async function daemonSet (t: TestContext, hostDir: string, args: string[]): Promise<Container> {
    const actions = join(await tempDir(t), 'actions')
    await writeConfigMap(actions, { install: ON_NODE, 'install-in-pod': IN_POD, long: LONG })
    return startContainer(t, [
      '--privileged', '--pid=host', '--network=host',
      '-e', 'AZURE_STORAGE_CONNECTION_STRING', '-e', 'LOG_LEVEL=info',
      '-v', `${actions}:/opt/actions:ro`, '-v', `${hostDir}:/mnt/actions`
    ], args, env)
  }

  await t.test('the entrypoint with --no-nsenter: the script runs in the container and downloads its package', async (t) => {
    const hostDir = await tempDir(t)
    const pod = await daemonSet(t, hostDir, ['--no-nsenter', 'install-in-pod', azurite.blobEndpoint, 'one', '--two'])
    await untilReady(pod)
    await scriptSaid(pod, 'in the image: yes args=one --two')
    await scriptSaid(pod, `${PACKAGE_SHA256}  tool.sh`)
    assert.ok(existsSync(join(hostDir, 'install-in-pod')), 'the action is copied to the host dir')
    assert.equal(await terminate(pod), 0)
  })

  await t.test('the entrypoint entering a fake node: the script runs on the node, downloads with wget, and the pod gets ready', async (t) => {
    const node = await startFakeNode(t)
    const pod = await daemonSet(t, node.hostDir, ['--nsenter-target', String(node.pid), '--host-path', node.hostPath, 'install', azurite.blobEndpoint, 'one', '--two'])
    await untilReady(pod)
    await scriptSaid(pod, `host=${node.hostname} args=one --two`)
    await scriptSaid(pod, `${PACKAGE_SHA256}  tool.sh`)
    await scriptSaid(pod, 'tool 1.0 installed')
    const status = JSON.parse(podman(['exec', pod.name, 'cat', '/tmp/pkg-serve/status.json']).stdout) as Record<string, unknown>
    assert.equal(status.exitCode, 0, JSON.stringify(status))
    assert.equal(await terminate(pod), 0)
  })

  await t.test('SIGTERM to the container stops the script\'s processes on the node', async (t) => {
    const node = await startFakeNode(t)
    const pod = await daemonSet(t, node.hostDir, ['--nsenter-target', String(node.pid), '--host-path', node.hostPath, '--kill-grace', '5', 'long', azurite.blobEndpoint])
    await scriptSaid(pod, 'started')
    const pids = (await readFile(join(node.hostDir, 'long.pids'), 'utf8')).trim().split('\n').map(Number)
    assert.equal(pids.length, 3)
    assert.ok(!pids.includes(1))
    assert.deepEqual(pids.filter(alive), pids, 'the script and its children run')
    t.after(() => { for (const pid of pids.filter(alive)) process.kill(pid, 'SIGKILL') })
    const code = await terminate(pod)
    assert.notEqual(code, 137, 'the container had to be killed')
    assert.deepEqual(pids.filter(alive), [], 'processes of the script outlived the container')
    const termsFile = join(node.hostDir, 'long.terms')
    const terms = existsSync(termsFile) ? (await readFile(termsFile, 'utf8')).trim().split('\n').sort() : []
    assert.deepEqual(terms, ['child', 'script', 'setsid'], `every process of the script got SIGTERM; ${JSON.stringify(pod.logs.filter((l) => l.stream === undefined).map((l) => l.msg))}`)
  })
})
