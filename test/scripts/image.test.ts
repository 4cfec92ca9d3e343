// scripts/image.sh (npm run image) short of a build: shellcheck-clean, where it keeps the image,
// and one clear line where it cannot build. Building and running the image is
// test/e2e/image.test.ts's part (CI builds it first).

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { REPO } from '../helpers/cli.ts'
import { isRoot } from '../helpers/fake-node.ts'
import { tempDir } from '../helpers/tmp.ts'

const SCRIPT = join(REPO, 'scripts/image.sh')
const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0

function image (args: string[], options: { env?: Record<string, string>, argv0?: string[] } = {}): { status: number | null, stdout: string, stderr: string } {
  const [cmd = '/bin/bash', ...pre] = options.argv0 ?? ['/bin/bash']
  const r = spawnSync(cmd, [...pre, SCRIPT, ...args], { env: options.env ?? process.env, encoding: 'utf8', timeout: 30_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

test('scripts/image.sh is shellcheck-clean', { skip: has('shellcheck') ? false : 'shellcheck is not installed (.ci/run installs it)' }, () => {
  const r = spawnSync('shellcheck', [SCRIPT], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stdout)
})

test('image.sh env: the exports with which podman sees the image, in PKG_SERVE_IMAGE_DIR', async (t) => {
  const dir = await tempDir(t)
  const r = image(['env'], { env: { PATH: process.env.PATH ?? '', PKG_SERVE_IMAGE_DIR: dir } })
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stdout, [
    `export CONTAINERS_STORAGE_CONF=${dir}/storage.conf`,
    `export CONTAINERS_CONF=${dir}/containers.conf`,
    'export PKG_SERVE_IMAGE=localhost/pkg-serve:ci',
    ''
  ].join('\n'))
})

test('image.sh fails with one line where it cannot build', async (t) => {
  await t.test('not root', () => {
    // As root, become nobody for this; otherwise we already are not root.
    const r = image([], { argv0: isRoot ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '/bin/bash'] : undefined })
    assert.equal(r.status, 1)
    assert.equal(r.stderr, 'image: needs root (buildah builds and podman runs the image as root; CI runs as root)\n')
  })

  await t.test('tools missing and no apt-get', { skip: isRoot ? false : 'needs root to get past the root check' }, async (t) => {
    const empty = await tempDir(t) // a PATH with nothing on it: no buildah, no apt-get
    const r = image([], { env: { PATH: empty } })
    assert.equal(r.status, 1)
    assert.match(r.stderr, /^image: buildah podman runc debootstrap missing and no apt-get to install them: [^\n]+\n$/)
  })

  await t.test('an unknown command', () => {
    const r = image(['frob'])
    assert.equal(r.status, 2)
    assert.equal(r.stderr, "image: unknown command 'frob' (build, env or clean)\n")
  })
})
