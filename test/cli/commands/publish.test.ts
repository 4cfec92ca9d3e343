// `pkg-serve publish` and `validate` as real processes against Azurite.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseManifest } from '../../../src/manifest/parse.ts'
import { startAzurite } from '../../helpers/azurite.ts'
import { REPO, cliArgs, runCli } from '../../helpers/cli.ts'
import { tempDir } from '../../helpers/tmp.ts'

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

function cli (args: string[], env: Record<string, string>): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, cliArgs(args), { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    child.once('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

test('publish and validate against Azurite', async (t) => {
  const azurite = await startAzurite(t)
  const container = await azurite.container('pkg')
  const env = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString }
  const dir = await tempDir(t)

  await t.test('16 concurrent publishers (12 packages, 4 tags of one) lose no entry and no byte', async () => {
    const jobs: Array<{ name: string, tag: string, file: string, data: Buffer }> = []
    for (let i = 0; i < 12; i++) jobs.push({ name: `pkg${i}`, tag: 'latest', file: join(dir, `pkg${i}.deb`), data: randomBytes(50_000 + i * 1000) })
    for (let i = 0; i < 4; i++) jobs.push({ name: 'shared', tag: `1.${i}`, file: join(dir, `shared-1.${i}.deb`), data: randomBytes(70_000 + i) })
    for (const j of jobs) await writeFile(j.file, j.data)

    const results = await Promise.all(jobs.map((j) => cli(['publish', j.file, '--name', j.name, '--tag', j.tag, '--sha256'], env)))
    for (const [i, r] of results.entries()) assert.equal(r.code, 0, `${jobs[i]?.name ?? ''}: ${r.stderr}`)
    const conflicts = results.filter((r) => /after \d+ concurrent update/.test(r.stdout)).length
    t.diagnostic(`${conflicts} of ${jobs.length} publishers retried after a concurrent manifest update`)

    const manifest = parseManifest((await container.getBlobClient('packages.toml').downloadToBuffer()).toString())
    assert.equal(manifest.entryCount, jobs.length)
    for (const j of jobs) {
      const entry = manifest.packages.get(j.name)?.get(j.tag)
      assert.ok(entry !== undefined, `[${j.name}.${j.tag}] is missing`)
      assert.equal(entry.sha256, sha256(j.data))
      const blob = await container.getBlobClient(entry.path).downloadToBuffer()
      assert.equal(sha256(blob), sha256(j.data), `${entry.path} is not intact`)
    }
  })

  await t.test('publish keeps the rest of the manifest and --path places the blob', async () => {
    const file = join(dir, 'tool.bin')
    await writeFile(file, 'tool v2')
    const r = await cli(['publish', azurite.blobEndpoint, file, '--name', 'pkg3', '--tag', 'latest', '--path', 'pool/tool-2.bin'], env)
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^published .*tool\.bin as \[pkg3\.latest\]: blob "pool\/tool-2\.bin" \(7 bytes, sha256 [0-9a-f]{64}\)/)
    const manifest = parseManifest((await container.getBlobClient('packages.toml').downloadToBuffer()).toString())
    assert.equal(manifest.entryCount, 16)
    assert.deepEqual(manifest.packages.get('pkg3')?.get('latest'), { name: 'pkg3', tag: 'latest', path: 'pool/tool-2.bin' })
    assert.equal((await container.getBlobClient('pool/tool-2.bin').downloadToBuffer()).toString(), 'tool v2')
  })

  await t.test('publish refuses bad input with one line', async () => {
    const bad = [
      [['publish', join(dir, 'missing.deb'), '--name', 'a', '--tag', 'b'], /cannot read .*missing\.deb: ENOENT/],
      [['publish', join(dir, 'tool.bin'), '--name', 'a b', '--tag', 'b'], /invalid --name "a b"/],
      [['publish', join(dir, 'tool.bin'), '--name', 'a', '--tag', 'b', '--path', '../x'], /invalid --path "\.\.\/x"/],
      [['publish', join(dir, 'tool.bin'), '--tag', 'b'], /required option '--name <name>' not specified/]
    ] as const
    for (const [args, pattern] of bad) {
      const r = runCli([...args], env)
      assert.equal(r.status === 0, false)
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr)
      assert.match(r.stderr, pattern)
    }
  })

  await t.test('validate: good and bad files, and --remote checks every path', async () => {
    const cases: Array<[string, RegExp]> = [
      ["[a.b]\npath = 'x'\n[c\n", /bad\.toml: line 3, column \d+: TOML syntax error/],
      ["[a.b]\npath = 'x'\ncolor = 1\n", /bad\.toml: \[a\.b\] key "color": unknown key/],
      ["[a.b]\npath = '../x'\n", /bad\.toml: \[a\.b\] key "path": must not contain "\." or "\.\." segments/],
      ["['a b'.c]\npath = 'x'\n", /bad\.toml: \['a b'\]: package name must match/]
    ]
    const bad = join(dir, 'bad.toml')
    for (const [text, pattern] of cases) {
      await writeFile(bad, text)
      const r = runCli(['validate', bad])
      assert.equal(r.status, 1)
      assert.match(r.stderr, pattern)
      assert.doesNotMatch(r.stderr, /\n\s+at /)
    }
    const good = join(dir, 'good.toml')
    await writeFile(good, "[pkg0.latest]\npath = 'pkg0.deb'\n[pkg1.latest]\npath = 'pkg1.deb'\n")
    const ok = runCli(['validate', good])
    assert.equal(ok.status, 0, ok.stderr)
    assert.match(ok.stdout, /good\.toml: valid \(2 packages, 2 entries\)/)
    const remote = runCli(['validate', good, '--remote', azurite.blobEndpoint], env)
    assert.equal(remote.status, 0, remote.stderr)
    assert.match(remote.stdout, /every path exists/)
    await writeFile(good, "[pkg0.latest]\npath = 'pkg0.deb'\n[gone.latest]\npath = 'gone.deb'\n")
    const missing = runCli(['validate', good, '--remote', azurite.blobEndpoint], env)
    assert.equal(missing.status, 1)
    assert.match(missing.stderr, /\[gone\.latest\] path "gone\.deb": blob "gone\.deb" in container "pkg" does not exist/)
  })
})
