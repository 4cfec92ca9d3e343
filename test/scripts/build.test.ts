// `npm run build` leaves dist/cli.js an executable, as README and package.json's bin call it.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { REPO } from '../helpers/cli.ts'

test('npm run build: ./dist/cli.js runs as an executable', () => {
  const build = spawnSync('npm', ['run', '--silent', 'build'], { cwd: REPO, encoding: 'utf8', timeout: 300_000 })
  assert.equal(build.status, 0, build.stdout + build.stderr)
  const cli = join(REPO, 'dist', 'cli.js')
  assert.equal(statSync(cli).mode & 0o111, 0o111, 'dist/cli.js is not executable by everyone')
  const version = spawnSync(cli, ['--version'], { encoding: 'utf8' })
  assert.equal(version.status, 0, version.stderr)
  assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/)
})
