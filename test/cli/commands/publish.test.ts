// `pkg-serve publish` as real processes against Azurite (and a local directory): concurrent
// publishers of different entries and of the same entry, and everything publish must not destroy.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync } from 'node:fs'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ContainerClient } from '@azure/storage-blob'
import { parseManifest } from '../../../src/manifest/parse.ts'
import type { Manifest } from '../../../src/manifest/parse.ts'
import { startAzurite } from '../../helpers/azurite.ts'
import { REPO, cliArgs, runCli } from '../../helpers/cli.ts'
import { tempDir } from '../../helpers/tmp.ts'

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

interface Exit { code: number | null, stdout: string, stderr: string }

function cli (args: string[], env: Record<string, string | undefined>): Promise<Exit> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, cliArgs(args), { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    child.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}

async function manifestOf (container: ContainerClient): Promise<Manifest> {
  return parseManifest((await container.getBlobClient('packages.toml').downloadToBuffer()).toString())
}

/** Every entry's blob is there and, where the entry has a sha256, hashes to it. */
async function assertEveryEntryVerifies (container: ContainerClient): Promise<void> {
  for (const tags of (await manifestOf(container)).packages.values()) {
    for (const e of tags.values()) {
      const bytes = await container.getBlobClient(e.path).downloadToBuffer()
      if (e.sha256 !== undefined) assert.equal(sha256(bytes), e.sha256, `[${e.name}.${e.tag}] ${e.path} does not verify`)
    }
  }
}

test('publish against Azurite', async (t) => {
  const azurite = await startAzurite(t)
  const container = await azurite.container('pkg')
  const env = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString, PKG_SERVE_STORAGE: undefined }
  const dir = await tempDir(t)

  await t.test('16 concurrent publishers (12 packages, 4 tags of one) lose no entry and no byte; blobs go to N/T/BASENAME', async () => {
    const jobs: Array<{ name: string, tag: string, file: string, data: Buffer }> = []
    for (let i = 0; i < 12; i++) jobs.push({ name: `pkg${i}`, tag: 'latest', file: join(dir, `pkg${i}.deb`), data: randomBytes(50_000 + i * 1000) })
    // The same file name for every tag: before N/T/BASENAME these shared one blob.
    for (let i = 0; i < 4; i++) {
      await mkdir(join(dir, `v${i}`))
      jobs.push({ name: 'shared', tag: `1.${i}`, file: join(dir, `v${i}`, 'shared.deb'), data: randomBytes(70_000 + i) })
    }
    for (const j of jobs) await writeFile(j.file, j.data)

    const results = await Promise.all(jobs.map((j) => cli(['publish', j.file, '--name', j.name, '--tag', j.tag, '--sha256'], env)))
    for (const [i, r] of results.entries()) assert.equal(r.code, 0, `${jobs[i]?.name ?? ''}: ${r.stderr}`)
    const conflicts = results.filter((r) => /after \d+ concurrent update/.test(r.stdout)).length
    t.diagnostic(`${conflicts} of ${jobs.length} publishers retried after a concurrent manifest update`)

    const manifest = await manifestOf(container)
    assert.equal(manifest.entryCount, jobs.length)
    for (const j of jobs) {
      const entry = manifest.packages.get(j.name)?.get(j.tag)
      assert.ok(entry !== undefined, `[${j.name}.${j.tag}] is missing`)
      assert.equal(entry.path, `${j.name}/${j.tag}/${j.name === 'shared' ? 'shared.deb' : `${j.name}.deb`}`)
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
    const manifest = await manifestOf(container)
    assert.equal(manifest.entryCount, 16)
    assert.deepEqual(manifest.packages.get('pkg3')?.get('latest'), { name: 'pkg3', tag: 'latest', path: 'pool/tool-2.bin' })
    assert.equal((await container.getBlobClient('pool/tool-2.bin').downloadToBuffer()).toString(), 'tool v2')
  })

  await t.test('the manifest blob is never written: not by --path, not by a file named packages.toml', async () => {
    const before = await container.getBlobClient('packages.toml').downloadToBuffer()
    const notes = join(dir, 'notes.txt')
    await writeFile(notes, 'notes')
    for (const overwrite of [[], ['--overwrite']]) {
      const r = await cli(['publish', notes, '--name', 'notes', '--tag', 'v1', '--path', 'packages.toml', ...overwrite], env)
      assert.notEqual(r.code, 0)
      assert.match(r.stderr, /^pkg-serve: refusing to upload .*notes\.txt as "packages\.toml": that blob is the manifest itself; choose another --path\n$/)
    }
    assert.deepEqual(await container.getBlobClient('packages.toml').downloadToBuffer(), before)

    await mkdir(join(dir, 'conf'))
    const named = join(dir, 'conf', 'packages.toml')
    await writeFile(named, "[not.the]\npath = 'manifest'\n")
    const r = await cli(['publish', named, '--name', 'conf', '--tag', 'v1', '--sha256'], env)
    assert.equal(r.code, 0, r.stderr)
    const manifest = await manifestOf(container)
    assert.equal(manifest.packages.get('conf')?.get('v1')?.path, 'conf/v1/packages.toml')
    assert.equal(manifest.entryCount, 17)
    await assertEveryEntryVerifies(container)
  })

  await t.test('bytes an entry names are never replaced without --overwrite; with it, every entry still verifies', async () => {
    const v1 = join(dir, 'app-v1.deb')
    const v2 = join(dir, 'app-v2.deb')
    await writeFile(v1, 'app one')
    await writeFile(v2, 'app two')
    assert.equal((await cli(['publish', v1, '--name', 'app', '--tag', '1', '--path', 'pool/app.deb', '--sha256'], env)).code, 0)
    const before = await manifestOf(container)

    // Another entry names the blob.
    const other = await cli(['publish', v2, '--name', 'app', '--tag', '2', '--path', 'pool/app.deb', '--sha256'], env)
    assert.notEqual(other.code, 0)
    assert.match(other.stderr, /^pkg-serve: refusing to replace blob "pool\/app\.deb": \[app\.1\] names it; choose another --path, or add --overwrite/)
    // An earlier version of this entry names it.
    const again = await cli(['publish', v2, '--name', 'app', '--tag', '1', '--path', 'pool/app.deb'], env)
    assert.notEqual(again.code, 0)
    assert.match(again.stderr, /refusing to replace blob "pool\/app\.deb": \[app\.1\] already names it \(published before\); publish a new tag, or add --overwrite/)
    // No entry names it, but it exists.
    await container.getBlockBlobClient('pool/stray.deb').uploadData(Buffer.from('stray'))
    const stray = await cli(['publish', v2, '--name', 'app', '--tag', '3', '--path', 'pool/stray.deb'], env)
    assert.notEqual(stray.code, 0)
    assert.match(stray.stderr, /refusing to replace blob "pool\/stray\.deb": it exists \(5 bytes\) though no entry names it/)
    assert.equal((await container.getBlobClient('pool/app.deb').downloadToBuffer()).toString(), 'app one')
    assert.equal((await container.getBlobClient('pool/stray.deb').downloadToBuffer()).toString(), 'stray')
    assert.deepEqual(await manifestOf(container), before)

    // --overwrite: [app.2] takes the blob, and [app.1], which names it too, gets its new digest.
    const forced = await cli(['publish', v2, '--name', 'app', '--tag', '2', '--path', 'pool/app.deb', '--sha256', '--overwrite'], env)
    assert.equal(forced.code, 0, forced.stderr)
    const after = await manifestOf(container)
    assert.equal(after.packages.get('app')?.get('1')?.sha256, sha256(Buffer.from('app two')))
    assert.equal(after.packages.get('app')?.get('2')?.sha256, sha256(Buffer.from('app two')))
    await assertEveryEntryVerifies(container)
  })

  await t.test('two publishers of one [N.T] at once: the entry names one of them, with its own bytes and digest', async () => {
    const runs = 6
    const race = async (label: string, paths: (i: number) => string[], flags: string[]): Promise<Exit[]> => {
      const files: Buffer[] = []
      for (let i = 0; i < runs; i++) {
        const data = randomBytes(300_000 + i)
        files.push(data)
        await mkdir(join(dir, label, String(i)), { recursive: true })
        await writeFile(join(dir, label, String(i), 'race.deb'), data)
      }
      const results = await Promise.all(files.map((_, i) =>
        cli(['publish', join(dir, label, String(i), 'race.deb'), '--name', 'race', '--tag', label, '--sha256', ...paths(i), ...flags], env)))
      const entry = (await manifestOf(container)).packages.get('race')?.get(label)
      assert.ok(entry !== undefined, `[race.${label}] is missing`)
      const winners = results.flatMap((r, i) => r.code === 0 && r.stdout.includes(`blob "${entry.path}"`) && r.stdout.includes(sha256(files[i] ?? Buffer.alloc(0))) ? [i] : [])
      assert.ok(winners.length >= 1, `no successful publisher wrote what the entry names: ${results.map((r) => r.stderr).join(' | ')}`)
      const bytes = await container.getBlobClient(entry.path).downloadToBuffer()
      assert.equal(sha256(bytes), entry.sha256, `[race.${label}] names bytes that are not its digest's`)
      assert.ok(files.some((f) => sha256(f) === entry.sha256), 'the entry names bytes no publisher sent')
      for (const r of results) if (r.code !== 0) assert.match(r.stderr, /^pkg-serve: [^\n]*\n$/)
      t.diagnostic(`${label}: ${results.filter((r) => r.code === 0).length} of ${runs} succeeded; failures: ${[...new Set(results.filter((r) => r.code !== 0).map((r) => r.stderr.replace(/"[^"]*"/g, '…').trim()))].join(' | ')}`)
      return results
    }
    // One blob name (N/T/race.deb) for all: it is created once; the others fail before the manifest.
    const same = await race('same', () => [], [])
    assert.equal(same.filter((r) => r.code === 0).length, 1, same.map((r) => r.stderr).join(''))
    for (const r of same) if (r.code !== 0) assert.match(r.stderr, /created by another publisher while this one uploaded|it exists \(\d+ bytes\) though no entry names it|already names it/)
    // A blob each: every publish succeeds in turn; the last manifest write names its own blob.
    await race('each', (i) => ['--path', `race/each-${i}.deb`], [])
    // --overwrite on one blob: replaced in place, and still the entry's bytes match its digest.
    await race('forced', () => ['--path', 'race/forced.deb'], ['--overwrite'])
    await assertEveryEntryVerifies(container)
  })

  await t.test('a missing container is created, and said so', async () => {
    const file = join(dir, 'first.txt')
    await writeFile(file, 'first')
    const r = await cli(['publish', file, '--name', 'first', '--tag', '1', '--container', 'fresh-one'], env)
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^created container "fresh-one", which did not exist: container "fresh-one" at http:\/\/127\.0\.0\.1:\d+\/devstoreaccount1/)
    const fresh = azurite.service.getContainerClient('fresh-one')
    assert.equal((await fresh.getBlobClient('first/1/first.txt').downloadToBuffer()).toString(), 'first')
    const again = await cli(['publish', file, '--name', 'first', '--tag', '2', '--container', 'fresh-one'], env)
    assert.equal(again.code, 0, again.stderr)
    assert.doesNotMatch(again.stdout, /created container/)
  })

  await t.test('publish refuses bad input with one line', async () => {
    const bad = [
      [['publish', join(dir, 'missing.deb'), '--name', 'a', '--tag', 'b'], /cannot read .*missing\.deb: ENOENT/],
      [['publish', join(dir, 'tool.bin'), '--name', 'a b', '--tag', 'b'], /invalid --name "a b"/],
      [['publish', join(dir, 'tool.bin'), '--name', 'a', '--tag', 'b', '--path', '../x'], /invalid --path "\.\.\/x"/],
      [['publish', join(dir, 'tool.bin'), '--tag', 'b'], /required option '--name <name>' not specified/],
      [['publish', 'mystorageaccountname', join(dir, 'tool.bin'), '--name', 'a', '--tag', 'b'],
        /STORAGE names account mystorageaccountname, but AZURE_STORAGE_CONNECTION_STRING is for account devstoreaccount1/]
    ] as const
    for (const [args, pattern] of bad) {
      const r = runCli([...args], env)
      assert.equal(r.status === 0, false)
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr)
      assert.match(r.stderr, pattern)
    }
  })
})

test('publish to a local directory: the container directory is created, and blobs are never replaced without --overwrite', async (t) => {
  const root = await tempDir(t)
  const file = join(root, 'tool.bin')
  await writeFile(file, 'tool')
  const env = { AZURE_STORAGE_CONNECTION_STRING: undefined, PKG_SERVE_STORAGE: undefined }
  const r = await cli(['publish', root, file, '--name', 'tool', '--tag', '1', '--sha256'], env)
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /^created container "pkg", which did not exist: local directory .*\/pkg/)
  assert.equal(await readFile(join(root, 'pkg', 'tool', '1', 'tool.bin'), 'utf8'), 'tool')
  const again = await cli(['publish', root, file, '--name', 'tool', '--tag', '1'], env)
  assert.notEqual(again.code, 0)
  assert.match(again.stderr, /\[tool\.1\] already names it/)
  // Concurrent publishers of one entry, one blob name: one wins, the entry verifies.
  for (let i = 0; i < 4; i++) {
    await mkdir(join(root, String(i)))
    await writeFile(join(root, String(i), 'same.bin'), randomBytes(100_000))
  }
  const results = await Promise.all([0, 1, 2, 3].map((i) => cli(['publish', root, join(root, String(i), 'same.bin'), '--name', 'tool', '--tag', '2', '--sha256'], env)))
  assert.equal(results.filter((x) => x.code === 0).length, 1, results.map((x) => x.stderr).join(''))
  const manifest = parseManifest(await readFile(join(root, 'pkg', 'packages.toml'), 'utf8'))
  const entry = manifest.packages.get('tool')?.get('2')
  assert.equal(sha256(await readFile(join(root, 'pkg', 'tool', '2', 'same.bin'))), entry?.sha256)
})

/** The CLI's argv such that a file with mode 000 cannot be read: as root, without the capabilities that read any file. */
function unprivileged (args: string[]): { file: string, args: string[] } | undefined {
  if (process.getuid?.() !== 0) return { file: process.execPath, args: cliArgs(args) }
  if (spawnSync('sh', ['-c', 'command -v setpriv']).status !== 0) return undefined
  const drop = '-dac_override,-dac_read_search'
  return { file: 'setpriv', args: ['--inh-caps', drop, '--bounding-set', drop, '--', process.execPath, ...cliArgs(args)] }
}

test('publish of a file it may not read: one line naming the file, before storage is touched', async (t) => {
  const root = await tempDir(t)
  const file = join(root, 'secret.bin')
  await writeFile(file, 'secret')
  await chmod(file, 0o000)
  const run = unprivileged(['publish', root, file, '--name', 'x', '--tag', '1'])
  if (run === undefined) {
    t.skip('as root this needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE')
    return
  }
  const r = spawnSync(run.file, run.args, { cwd: REPO, env: { ...process.env, AZURE_STORAGE_CONNECTION_STRING: undefined, PKG_SERVE_STORAGE: undefined }, encoding: 'utf8', timeout: 60_000 })
  assert.equal(r.status, 2, r.stderr)
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr)
  assert.match(r.stderr, /^pkg-serve: cannot read .*secret\.bin: EACCES$/m)
  assert.equal(existsSync(join(root, 'pkg')), false, 'storage was touched')
})

/** chattr +i (immutable) works only as root on filesystems that support it (ext4, xfs; not overlayfs, tmpfs). */
function immutableWorks (dir: string): boolean {
  const probe = join(dir, 'probe')
  mkdirSync(probe)
  const ok = spawnSync('chattr', ['+i', probe]).status === 0
  if (ok) spawnSync('chattr', ['-i', probe])
  return ok
}

test('a blob publish created but could not name in the manifest is deleted again, so a retry needs no --overwrite', async (t) => {
  const root = await tempDir(t)
  if (!immutableWorks(root)) {
    t.skip('needs chattr +i (root, on ext4 or xfs) to make the manifest unwritable while the blob directory stays writable')
    return
  }
  const file = join(root, 'tool.bin')
  await writeFile(file, 'tool')
  const env = { AZURE_STORAGE_CONNECTION_STRING: undefined, PKG_SERVE_STORAGE: undefined }
  // The container directory is immutable (no manifest can be written in it); the blob's is not.
  await mkdir(join(root, 'pkg', 'tool', '1'), { recursive: true })
  assert.equal(spawnSync('chattr', ['+i', join(root, 'pkg')]).status, 0)
  t.after(() => { spawnSync('chattr', ['-i', join(root, 'pkg')]) })
  const failed = await cli(['publish', root, file, '--name', 'tool', '--tag', '1'], env)
  assert.notEqual(failed.code, 0)
  assert.deepEqual(readdirSync(join(root, 'pkg', 'tool', '1')), [], 'the blob (or a temporary file) was left behind')
  assert.equal(spawnSync('chattr', ['-i', join(root, 'pkg')]).status, 0)
  const retried = await cli(['publish', root, file, '--name', 'tool', '--tag', '1'], env)
  assert.equal(retried.code, 0, retried.stderr)
})
