// `npm run azurite`: one command that starts an Azurite the storage SDK can talk to, keeps its data
// outside the repository, prints the export line that works, and stops on SIGTERM to npm.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { REPO, cliArgs } from '../helpers/cli.ts'
import { tempDir } from '../helpers/tmp.ts'

test('npm run azurite: publish and validate --remote work with the line it prints; its data stays out of the repo', async (t) => {
  const dir = await tempDir(t)
  const location = join(dir, 'azurite-data')
  const before = readdirSync(REPO).filter((f) => /azurite/i.test(f))
  const child = spawn('npm', ['run', '--silent', 'azurite'], {
    cwd: REPO, env: { ...process.env, AZURITE_PORT: '0', AZURITE_LOCATION: location }, stdio: ['ignore', 'pipe', 'pipe'], detached: true
  })
  t.after(() => { try { process.kill(-(child.pid ?? 0), 'SIGKILL') } catch { /* gone */ } })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()))
  const deadline = Date.now() + 60_000
  while (!/Ctrl-C stops Azurite/.test(out)) {
    assert.ok(Date.now() < deadline && child.exitCode === null, `npm run azurite did not start:\n${out}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  assert.match(out, /well-known development key/)
  const line = /^ {2}(export AZURE_STORAGE_CONNECTION_STRING=.*)$/m.exec(out)?.[1]
  assert.ok(line !== undefined, out)

  const file = join(dir, 'tool.bin')
  writeFileSync(file, 'tool')
  const manifest = join(dir, 'packages.toml')
  writeFileSync(manifest, "[tool.'1.0']\npath = 'tool/1.0/tool.bin'\n")
  const sh = (args: string[]) => spawnSync('bash', ['-c', `${line} && "$0" "$@"`, process.execPath, ...cliArgs(args)],
    { cwd: REPO, encoding: 'utf8', env: { ...process.env, AZURE_STORAGE_CONNECTION_STRING: undefined, PKG_SERVE_STORAGE: undefined } })
  const published = sh(['publish', file, '--name', 'tool', '--tag', '1.0', '--sha256'])
  assert.equal(published.status, 0, published.stderr)
  assert.match(published.stdout, /^created container "pkg"/)
  const validated = sh(['validate', manifest, '--remote', 'devstoreaccount1'])
  assert.equal(validated.status, 0, validated.stderr)
  assert.match(validated.stdout, /every path exists/)

  assert.ok(readdirSync(location).length > 0, 'Azurite kept nothing in AZURITE_LOCATION')
  assert.deepEqual(readdirSync(REPO).filter((f) => /azurite/i.test(f)), before, 'Azurite wrote into the repository')
  process.kill(child.pid ?? 0, 'SIGTERM')
  await closed
  const port = /127\.0\.0\.1:(\d+)/.exec(out)?.[1] ?? ''
  const stopDeadline = Date.now() + 20_000
  while (spawnSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${port}/`]).status === 0) {
    assert.ok(Date.now() < stopDeadline, 'Azurite still answers after SIGTERM to npm')
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
})
