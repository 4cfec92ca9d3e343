// The deployment files, tested as far as this machine allows (no Docker engine here): every
// kustomization renders and every object validates against the Kubernetes schemas (unknown
// fields included); the Dockerfile and tasks.yaml lint; a production-only install starts and
// serves; and the example ConfigMap's script runs for real through the launcher on a fake node,
// installing a .deb built here with dpkg-deb into a throwaway root.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import * as k8s from '@kubernetes/client-node'
import { validate as lintDockerfile } from 'dockerfile-utils'
import * as models from 'kubernetes-models'
import { parse, parseAllDocuments } from 'yaml'
import { startAzurite } from '../helpers/azurite.ts'
import { REPO, startCli } from '../helpers/cli.ts'
import { writeConfigMap } from '../helpers/configmap.ts'
import { NEEDS_ROOT, isRoot, startFakeNode } from '../helpers/fake-node.ts'
import { tempDir } from '../helpers/tmp.ts'

type Obj = Record<string, unknown>
type Validatable = new (data: Obj) => { validate: () => void }

const KUSTOMIZATIONS = ['deploy/base', 'deploy/example']
const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0

/** Every kustomize this machine has: kubectl's own and a standalone one (.ci/run adds it to PATH). */
function renderers (): Array<{ name: string, render: (dir: string) => string }> {
  const out: Array<{ name: string, render: (dir: string) => string }> = []
  if (has('kubectl')) out.push({ name: 'kubectl kustomize', render: (dir) => execFileSync('kubectl', ['kustomize', dir], { cwd: REPO, encoding: 'utf8' }) })
  if (has('kustomize')) out.push({ name: 'kustomize build', render: (dir) => execFileSync('kustomize', ['build', dir], { cwd: REPO, encoding: 'utf8' }) })
  return out
}
const NO_KUSTOMIZE = 'needs kubectl or kustomize on PATH (.ci/run installs kustomize)'
const render = (dir: string): string => {
  const r = renderers()[0]
  if (r === undefined) throw new Error(NO_KUSTOMIZE)
  return r.render(dir)
}

function parseDocs (text: string): Obj[] {
  return parseAllDocuments(text).map((doc) => {
    assert.deepEqual(doc.errors.map(String), [])
    return doc.toJS() as Obj | null
  }).filter((o): o is Obj => o !== null)
}

/** kubernetes-models classes by "apiVersion/kind". */
const schemaClasses = new Map<string, Validatable>()
function collect (ns: unknown, depth: number): void {
  for (const value of Object.values(ns as Obj)) {
    const cls = value as { apiVersion?: unknown, kind?: unknown }
    if (typeof value === 'function' && typeof cls.apiVersion === 'string' && typeof cls.kind === 'string') {
      schemaClasses.set(`${cls.apiVersion}/${cls.kind}`, value as unknown as Validatable)
    } else if (value !== null && typeof value === 'object' && depth < 2) collect(value, depth + 1)
  }
}
collect(models, 0)

/** Fields the Kubernetes API does not know (the schemas above allow them; the API server drops them). */
function unknownFields (value: unknown, type: string, path = ''): string[] {
  const list = /^Array<(.+)>$/.exec(type)
  if (list?.[1] !== undefined) return ((value ?? []) as unknown[]).flatMap((v, i) => unknownFields(v, list[1] ?? '', `${path}[${i}]`))
  const cls = (k8s as unknown as Record<string, { attributeTypeMap?: Array<{ baseName: string, type: string }> }>)[type]
  if (cls?.attributeTypeMap === undefined || value === null || typeof value !== 'object') return []
  const attrs = new Map(cls.attributeTypeMap.map((a) => [a.baseName, a.type]))
  return Object.entries(value).flatMap(([k, v]) => {
    const t = attrs.get(k)
    return t === undefined ? [`${path}.${k}`] : unknownFields(v, t, `${path}.${k}`)
  })
}

function validateObject (obj: Obj): void {
  const key = `${String(obj.apiVersion)}/${String(obj.kind)}`
  const Cls = schemaClasses.get(key)
  assert.ok(Cls !== undefined, `no schema for ${key}`)
  new Cls(obj).validate()
  const version = String(obj.apiVersion).split('/').pop() ?? ''
  const typeName = `${version.charAt(0).toUpperCase()}${version.slice(1)}${String(obj.kind)}`
  assert.deepEqual(unknownFields(obj, typeName), [], `${key} has fields Kubernetes does not know`)
}

test('the validator catches what it must (so a pass means something)', { skip: renderers().length > 0 ? false : NO_KUSTOMIZE }, () => {
  const ds = parseDocs(render('deploy/base')).find((o) => o.kind === 'DaemonSet')
  assert.ok(ds !== undefined)
  const typo = structuredClone(ds) as { spec: { template: { spec: Obj } } }
  typo.spec.template.spec.tolerationz = typo.spec.template.spec.tolerations
  assert.throws(() => validateObject(typo), /fields Kubernetes does not know/)
  const broken = structuredClone(ds) as { spec: Obj }
  delete broken.spec.selector
  assert.throws(() => validateObject(broken), /selector/)
})

test('a kustomize is available to render the deploy files', { skip: renderers().length > 0 ? false : NO_KUSTOMIZE }, () => {
  assert.ok(renderers().length > 0)
})

for (const dir of KUSTOMIZATIONS) {
  for (const { name, render } of renderers()) {
    test(`${dir} renders with ${name} and every object validates`, () => {
      const objects = parseDocs(render(dir))
      assert.ok(objects.length >= 2)
      for (const obj of objects) validateObject(obj)

      const ds = objects.find((o) => o.kind === 'DaemonSet') as { metadata: Obj, spec: { template: { spec: Record<string, unknown> } } } | undefined
      assert.ok(ds !== undefined)
      const pod = ds.spec.template.spec as {
        hostNetwork: boolean
        hostPID: boolean
        tolerations: Obj[]
        containers: Array<{ args: string[], securityContext: Obj, readinessProbe: { exec: { command: string[] } }, livenessProbe: Obj, resources: { limits: Obj }, volumeMounts: Array<{ name: string, mountPath: string }> }>
        volumes: Array<{ name: string, configMap?: { name: string }, hostPath?: { path: string } }>
      }
      assert.equal(ds.metadata.namespace, 'pkg-serve')
      assert.equal(pod.hostNetwork, true)
      assert.equal(pod.hostPID, true)
      assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }])
      // Never on virtual nodes (the toleration above would let it in), and not left Pending on a full node.
      assert.deepEqual((pod as { affinity?: unknown }).affinity, {
        nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'type', operator: 'NotIn', values: ['virtual-kubelet'] }] }] } }
      })
      assert.equal((pod as { priorityClassName?: string }).priorityClassName, 'system-node-critical')
      const [c] = pod.containers
      assert.ok(c !== undefined)
      assert.deepEqual(c.securityContext, { privileged: true })
      assert.deepEqual(c.args, ['install', 'mystorageaccountname'])
      // The probe tests the file the launcher writes by default.
      assert.deepEqual(c.readinessProbe.exec.command, ['test', '-f', '/tmp/pkg-serve/ready'])
      assert.ok(c.livenessProbe !== undefined)
      assert.equal(c.resources.limits.memory, '1000Mi')
      const mount = (p: string) => c.volumeMounts.find((m) => m.mountPath === p)
      assert.equal(pod.volumes.find((v) => v.name === mount('/opt/actions')?.name)?.configMap?.name.startsWith('pkg-serve-actions'), true)
      assert.equal(pod.volumes.find((v) => v.name === mount('/mnt/actions')?.name)?.hostPath?.path, '/opt/actions')

      if (dir === 'deploy/example') {
        const cm = objects.find((o) => o.kind === 'ConfigMap') as { metadata: { name: string }, data: Record<string, string> } | undefined
        assert.ok(cm !== undefined)
        assert.equal(pod.volumes.find((v) => v.configMap !== undefined)?.configMap?.name, cm.metadata.name, 'the DaemonSet mounts the generated ConfigMap')
        assert.ok(cm.data.install?.startsWith('#!/bin/bash\n'))
        const image = (ds.spec.template.spec.containers as Array<{ image: string }>)[0]?.image
        // Pinned by the run ID tag tasks.yaml pushes, so that applying a new tag rolls it out.
        assert.equal(image, 'myregistry.azurecr.io/pkg-serve:ca1')
        assert.doesNotMatch(image ?? '', /:latest$/)
      }
    })
  }
}

test('docker/Dockerfile lints clean and is the image the spec describes', async () => {
  const text = await readFile(join(REPO, 'docker/Dockerfile'), 'utf8')
  assert.deepEqual(lintDockerfile(text).map((d) => `${d.range.start.line + 1}: ${d.message}`), [])
  assert.equal((text.match(/^FROM /gm) ?? []).length, 3, 'multi-stage: build, deps, runtime')
  assert.match(text, /^ARG NODE_IMAGE=node:24-bookworm-slim$/m)
  assert.match(text, /npm ci --omit=dev/)
  assert.match(text, /^ENTRYPOINT \["\/usr\/bin\/tini", "-s", "--", "node", "\/app\/dist\/cli\.js", "run"\]$/m)
  // Everything the build stage copies exists, and nothing it needs is excluded by .dockerignore.
  for (const [, src] of text.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
    for (const p of (src ?? '').split(' ')) assert.ok(spawnSync('test', ['-e', join(REPO, p)]).status === 0, `COPY ${p}: missing`)
  }
  const ignored = (await readFile(join(REPO, '.dockerignore'), 'utf8')).split('\n')
  for (const needed of ['src', 'package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json']) assert.ok(!ignored.includes(needed), `${needed} is dockerignored`)
})

test('tasks.yaml builds docker/Dockerfile and pushes the run tag and latest', async () => {
  const tasks = parse(await readFile(join(REPO, 'tasks.yaml'), 'utf8')) as { version: string, steps: Array<{ build?: string, push?: string[] }> }
  assert.equal(tasks.version, 'v1.1.0')
  const build = tasks.steps.find((s) => s.build !== undefined)?.build ?? ''
  assert.match(build, /-f docker\/Dockerfile \.$/)
  assert.match(build, /-t \{\{\.Run\.Registry\}\}\/pkg-serve:\{\{\.Run\.ID\}\}/)
  assert.match(build, /-t \{\{\.Run\.Registry\}\}\/pkg-serve:latest/)
  assert.deepEqual(tasks.steps.find((s) => s.push !== undefined)?.push, ['{{.Run.Registry}}/pkg-serve:{{.Run.ID}}', '{{.Run.Registry}}/pkg-serve:latest'])
})

test('the example scripts are shellcheck-clean', { skip: has('shellcheck') ? false : 'shellcheck is not installed (.ci/run installs it)' }, () => {
  const r = spawnSync('shellcheck', ['deploy/example/install.sh', 'examples/files/install-hello.sh'], { cwd: REPO, encoding: 'utf8' })
  assert.equal(r.status, 0, r.stdout)
})

test('a production-only install (as the image makes it) starts and serves', async (t) => {
  const dir = await tempDir(t)
  execFileSync(process.execPath, [join(REPO, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', join(dir, 'dist')], { cwd: REPO })
  for (const f of ['package.json', 'package-lock.json']) await copyFile(join(REPO, f), join(dir, f))
  execFileSync('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: dir, stdio: 'ignore', timeout: 300_000 })
  for (const dev of ['typescript', 'tsx', 'azurite', 'eslint']) {
    assert.equal(spawnSync('test', ['-e', join(dir, 'node_modules', dev)]).status, 1, `${dev} is in a production install`)
  }
  await mkdir(join(dir, 'store/pkg'), { recursive: true })
  await writeFile(join(dir, 'store/pkg/hello.txt'), 'hello\n')
  await writeFile(join(dir, 'store/pkg/packages.toml'), "[hello.latest]\npath = 'hello.txt'\n")

  const child = spawn(process.execPath, [join(dir, 'dist/cli.js'), 'serve', './store', '--port', '0'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => { child.kill('SIGKILL') })
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString()
      const m = /"port":(\d+),"msg":"listening on/.exec(out)
      if (m?.[1] !== undefined) resolve(Number(m[1]))
    })
    child.stderr.on('data', (c: Buffer) => { out += c.toString() })
    child.once('exit', () => reject(new Error(`exited: ${out}`)))
  })
  const r = spawnSync('curl', ['-fsS', `http://localhost:${port}/pkg/hello/latest`], { encoding: 'utf8' })
  assert.equal(r.stdout, 'hello\n', r.stderr)
  const help = spawnSync(process.execPath, [join(dir, 'dist/cli.js'), 'run', '--help'], { encoding: 'utf8' })
  assert.equal(help.status, 0)
  assert.match(help.stdout, /--nsenter-target/)
})

test('the example ConfigMap script installs the package through the launcher on a fake node', { skip: isRoot ? false : NEEDS_ROOT }, async (t) => {
  if (!has('dpkg-deb') || !has('dpkg')) { t.skip('dpkg is not installed'); return }
  if (renderers().length === 0) { t.skip(NO_KUSTOMIZE); return }
  const rendered = parseDocs(render('deploy/example'))
  const script = (rendered.find((o) => o.kind === 'ConfigMap') as { data: { install: string } }).data.install

  // A small real package, built with dpkg-deb.
  const work = await tempDir(t)
  const build = async (pkg: string, marker: string): Promise<Buffer> => {
    const root = join(work, `${pkg}-build`)
    await mkdir(join(root, 'DEBIAN'), { recursive: true })
    await chmod(join(root, 'DEBIAN'), 0o755)
    await mkdir(join(root, 'usr/share', pkg), { recursive: true })
    await writeFile(join(root, 'DEBIAN/control'), `Package: ${pkg}\nVersion: 1.0.0\nArchitecture: all\nMaintainer: Tests <tests@pkg-serve.invalid>\nDescription: test package\n`)
    await writeFile(join(root, 'usr/share', pkg, 'hello.txt'), marker)
    execFileSync('dpkg-deb', ['--root-owner-group', '--build', root, join(work, `${pkg}.deb`)], { stdio: 'ignore' })
    return readFile(join(work, `${pkg}.deb`))
  }
  const good = await build('pkg-serve-hello', 'installed by the example script\n')
  const wrong = await build('some-other-package', 'wrong\n')

  const azurite = await startAzurite(t)
  const container = await azurite.container('pkg')
  await container.getBlockBlobClient('pool/pkg-serve-hello_1.0.0_all.deb').uploadData(good)
  await container.getBlockBlobClient('pool/wrong.deb').uploadData(wrong)
  const manifest = (path: string, data: Buffer) => `[pkg-serve-hello.'1.0.0']\npath = '${path}'\nsha256 = '${createHash('sha256').update(data).digest('hex')}'\n`
  await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from(manifest('pool/pkg-serve-hello_1.0.0_all.deb', good)))

  const node = await startFakeNode(t)
  const actions = join(work, 'actions')
  await writeConfigMap(actions, { install: script })
  const run = async (root: string) => {
    await mkdir(join(root, 'var/lib/dpkg'), { recursive: true })
    const cli = startCli(t, [
      'run', '--actions-dir', actions, '--host-dir', node.hostDir, '--host-path', node.hostPath,
      '--nsenter-target', String(node.pid), '--state-dir', join(work, 'state'), '--exit-on-success',
      'install', 'devstoreaccount1', '--root', root
    ], { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString })
    return { cli, exit: await cli.exited() }
  }

  const root = join(work, 'throwaway-root')
  const { cli, exit } = await run(root)
  assert.equal(exit.code, 0, JSON.stringify(cli.logs.filter((l) => l.stream !== undefined).map((l) => l.msg)))
  const lines = cli.logs.filter((l) => l.stream !== undefined).map((l) => String(l.msg))
  assert.ok(lines.includes('downloading pkg-serve-hello 1.0.0'))
  assert.ok(lines.includes('installing pkg-serve-hello 1.0.0'))
  assert.equal(await readFile(join(root, 'usr/share/pkg-serve-hello/hello.txt'), 'utf8'), 'installed by the example script\n')
  const status = spawnSync('dpkg', ['--root', root, '-s', 'pkg-serve-hello'], { encoding: 'utf8' })
  assert.match(status.stdout, /^Status: install ok installed$/m)

  // The file installed is the one downloaded for NAME/TAG: a different package there is refused.
  await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from(manifest('pool/wrong.deb', wrong)))
  const other = join(work, 'throwaway-root-2')
  const refused = await run(other)
  assert.equal(refused.exit.code, 1)
  assert.ok(refused.cli.logs.some((l) => l.msg === 'install.sh: /pkg/pkg-serve-hello/1.0.0 is package some-other-package, not pkg-serve-hello'))
  assert.equal(spawnSync('test', ['-e', join(other, 'usr/share/some-other-package')]).status, 1)
})
