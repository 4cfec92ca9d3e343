// `pkg-serve serve` as a real process against real Azurite, with real HTTP clients.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { AccountSASPermissions } from '@azure/storage-blob'
import { startAzurite } from '../../helpers/azurite.ts'
import { runCli, startCli } from '../../helpers/cli.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { until } from '../../helpers/until.ts'

const exec = promisify(execFile)
const isRoot = process.getuid?.() === 0

interface Exit { code: number, stdout: string, stderr: string }
async function run (cmd: string, args: string[], cwd?: string): Promise<Exit> {
  try {
    const { stdout, stderr } = await exec(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code?: number, stdout?: string, stderr?: string }
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

test('serve against Azurite with curl and wget', async (t) => {
  const azurite = await startAzurite(t)
  const container = await azurite.container('pkg')
  const big = randomBytes(6 * 1024 * 1024 + 123)
  const small = Buffer.from('small package\n')
  await container.getBlockBlobClient('pool/big-1.0.deb').uploadData(big)
  await container.getBlockBlobClient('small.txt').uploadData(small)
  await container.getBlockBlobClient('corrupt.bin').uploadData(big)
  await container.getBlockBlobClient('unnamed.bin').uploadData(Buffer.from('UNNAMED'))
  await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from(`
[big.'1.0']
path = 'pool/big-1.0.deb'
sha256 = '${sha256(big)}'

[small.latest]
path = 'small.txt'

[corrupt.latest]
path = 'corrupt.bin'
sha256 = '${'0'.repeat(64)}'
`))

  const server = startCli(t, ['serve', '--port', '0', '--poll-interval', '1'], { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString, LOG_LEVEL: 'info' })
  const listening = await server.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on'))
  assert.deepEqual(listening.addresses, ['127.0.0.1', '::1'])
  const port = Number(listening.port)
  const url = `http://localhost:${port}`
  const dir = await tempDir(t)

  await t.test('the start-up log names the storage and the credential, never the key', () => {
    const text = JSON.stringify(server.logs)
    assert.match(text, /with a connection string \(account devstoreaccount1\)/)
    assert.ok(!text.includes('Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq'), 'the account key appears in the log')
  })

  await t.test('curl downloads a large blob intact, with every header', async () => {
    const out = join(dir, 'big-curl.deb')
    const r = await run('curl', ['-sS', '-f', '-D', join(dir, 'headers'), '-o', out, `${url}/pkg/big/1.0`])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(sha256(await readFile(out)), sha256(big))
    const headers = (await readFile(join(dir, 'headers'), 'utf8')).toLowerCase()
    assert.match(headers, /^http\/1\.1 200 ok/)
    assert.match(headers, new RegExp(`content-length: ${big.length}\\r`))
    assert.match(headers, /etag: "0x[0-9a-f]+"/)
    assert.match(headers, /last-modified: /)
    assert.match(headers, /accept-ranges: bytes/)
    assert.match(headers, /content-type: application\/x-debian-package/)
    assert.match(headers, /content-disposition: attachment; filename="big-1.0.deb"/)
  })

  await t.test('curl -C - resumes a partial file to identical bytes', async () => {
    const out = join(dir, 'big-resume-curl.deb')
    await writeFile(out, big.subarray(0, 1_000_003))
    const r = await run('curl', ['-sS', '-f', '-C', '-', '-o', out, `${url}/pkg/big/1.0`])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(sha256(await readFile(out)), sha256(big))
  })

  await t.test('wget -c resumes a partial file to identical bytes', async () => {
    await writeFile(join(dir, '1.0'), big.subarray(0, 2_500_000))
    const r = await run('wget', ['-q', '-c', `localhost:${port}/pkg/big/1.0`], dir)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(sha256(await readFile(join(dir, '1.0'))), sha256(big))
  })

  await t.test('wget -O with the name from Content-Disposition', async () => {
    const r = await run('wget', ['-q', '--content-disposition', `${url}/pkg/small/latest`], dir)
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(await readFile(join(dir, 'small.txt')), small)
  })

  await t.test('IPv6 loopback answers on the same port', async () => {
    const r = await run('curl', ['-sS', '-f', '-g', `http://[::1]:${port}/pkg/small/latest`])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, small.toString())
  })

  await t.test('wget localhost:PORT where localhost resolves to ::1 first', { skip: isRoot ? false : 'needs root to bind-mount an /etc/hosts listing ::1 first (CI runs as root)' }, async () => {
    const hosts = join(dir, 'hosts')
    await writeFile(hosts, '::1 localhost\n127.0.0.1 localhost\n')
    const script = 'mount --bind "$1" /etc/hosts && getent ahosts localhost | head -n 1 && wget -q -O - "localhost:$2/pkg/small/latest"'
    const r = spawnSync('unshare', ['--mount', 'sh', '-c', script, 'sh', hosts, String(port)], { encoding: 'utf8' })
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /^::1\s/)
    assert.ok(r.stdout.endsWith(small.toString()))
  })

  await t.test('a sha256 mismatch breaks the transfer: curl fails, the file is short', async () => {
    const out = join(dir, 'corrupt')
    const r = await run('curl', ['-sS', '-o', out, `${url}/pkg/corrupt/latest`])
    assert.notEqual(r.code, 0, 'curl reported success for a corrupt download')
    assert.ok((await readFile(out)).length < big.length)
    const w = await run('wget', ['-q', '-t', '1', '-O', join(dir, 'corrupt-wget'), `${url}/pkg/corrupt/latest`])
    assert.notEqual(w.code, 0, 'wget reported success for a corrupt download')
  })

  await t.test('a blob overwritten mid-download: one version or a failure, never a mix', async () => {
    const before = randomBytes(4 * 1024 * 1024)
    const after = randomBytes(4 * 1024 * 1024)
    await container.getBlockBlobClient('small.txt').uploadData(before)
    const out = join(dir, 'overwritten')
    const download = run('curl', ['-sS', '-f', '--limit-rate', '2M', '-o', out, `${url}/pkg/small/latest`])
    // Overwrite once the download has begun: the first bytes are on disk.
    await until('the first bytes of the download', async () => (await stat(out).catch(() => undefined))?.size ? true : undefined)
    await container.getBlockBlobClient('small.txt').uploadData(after)
    const r = await download
    const got = await readFile(out)
    if (r.code === 0) {
      assert.ok(sha256(got) === sha256(before) || sha256(got) === sha256(after), 'a complete download mixes versions')
    } else {
      assert.ok(got.length < before.length, 'a failed download has every byte')
    }
    await container.getBlockBlobClient('small.txt').uploadData(small)
  })

  await t.test('404s and listings through curl', async () => {
    const r = await run('curl', ['-sS', '-w', '%{http_code}', `${url}/pkg/small/nope`])
    assert.match(r.stdout, /"message":"package \\"small\\" has no tag \\"nope\\"; its tags: latest"\}404$/)
    const unnamed = await run('curl', ['-sS', '--path-as-is', `${url}/pkg/small/../../unnamed.bin`])
    assert.ok(!unnamed.stdout.includes('UNNAMED'))
    const list = await run('curl', ['-sS', '-f', `${url}/pkg`])
    assert.deepEqual(JSON.parse(list.stdout).packages.map((p: { name: string }) => p.name), ['big', 'corrupt', 'small'])
  })

  await t.test('hot reload: a new manifest entry is served within one poll (1 s)', async () => {
    const manifest = container.getBlockBlobClient('packages.toml')
    const current = (await manifest.downloadToBuffer()).toString()
    const checked = async (): Promise<string> => ((await (await fetch(`${url}/readyz`)).json()) as { manifest: { checkedAt: string } }).manifest.checkedAt
    await manifest.uploadData(Buffer.from(current + "\n[fresh.latest]\npath = 'small.txt'\n"))
    // Counted in polls, not in time: the second check after the upload began after it.
    let last = await checked()
    for (let polls = 0; polls < 2; polls++) {
      last = await until('a manifest check', async () => { const now = await checked(); return now !== last ? now : undefined })
    }
    const status = Number((await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `${url}/pkg/fresh/latest`])).stdout)
    assert.equal(status, 200)
  })

  await t.test('SIGTERM closes the server and exits 0', async () => {
    const { code } = await server.stop()
    assert.equal(code, 0)
    const r = await run('curl', ['-sS', `${url}/healthz`])
    assert.notEqual(r.code, 0)
  })
})

test('a SAS URL as STORAGE works and its signature never reaches the log', async (t) => {
  const azurite = await startAzurite(t)
  const container = await azurite.container('pkg')
  await container.getBlockBlobClient('a.txt').uploadData(Buffer.from('via SAS'))
  await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from("[a.latest]\npath = 'a.txt'\n"))
  const sasUrl = azurite.service.generateAccountSasUrl(new Date(Date.now() + 3600_000), AccountSASPermissions.parse('rl'), 'sco')
  const sig = new URL(sasUrl).searchParams.get('sig')
  assert.ok(sig !== null && sig.length > 10)

  const server = startCli(t, ['serve', sasUrl, '--port', '0', '--log-level', 'debug'], { AZURE_STORAGE_CONNECTION_STRING: undefined })
  const listening = await server.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on'))
  const r = await run('curl', ['-sS', '-f', `http://127.0.0.1:${Number(listening.port)}/pkg/a/latest`])
  assert.equal(r.stdout, 'via SAS', r.stderr)
  await run('curl', ['-sS', `http://127.0.0.1:${Number(listening.port)}/pkg/a/nope`])
  await server.stop()
  // The SAS in PKG_SERVE_STORAGE (from a Secret), STORAGE in the args without it: the same.
  const bare = new URL(sasUrl)
  bare.search = ''
  const fromEnv = startCli(t, ['serve', bare.href, '--port', '0', '--log-level', 'debug'], { AZURE_STORAGE_CONNECTION_STRING: undefined, PKG_SERVE_STORAGE: sasUrl })
  const listening2 = await fromEnv.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on'))
  const r2 = await run('curl', ['-sS', '-f', `http://127.0.0.1:${Number(listening2.port)}/pkg/a/latest`])
  assert.equal(r2.stdout, 'via SAS', r2.stderr)
  await fromEnv.stop()
  const everything = JSON.stringify([...server.logs, ...fromEnv.logs]) + server.stderr() + fromEnv.stderr()
  assert.match(everything, /with a SAS token/)
  assert.ok(!everything.includes(sig) && !everything.includes(encodeURIComponent(sig)), 'the SAS signature appears in the log')
})

test('serve says "ready" only when /readyz does, and explains a mistaken STORAGE in one line', async (t) => {
  const root = await tempDir(t)
  await mkdir(join(root, 'pkg'))
  const server = startCli(t, ['serve', root, '--port', '0', '--poll-interval', '0'], { AZURE_STORAGE_CONNECTION_STRING: undefined, LOG_LEVEL: 'info' })
  const line = await server.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('pkg-serve listening at'))
  assert.match(String(line.msg), /but not ready: no manifest loaded yet \(.*packages\.toml.* does not exist\)/)
  assert.equal(line.ready, false)
  assert.equal(server.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('ready to serve')), false)
  const readyz = await fetch(`${String(line.url)}/readyz`)
  assert.equal(readyz.status, 503)
  await server.stop()

  const env = { AZURE_STORAGE_CONNECTION_STRING: undefined, PKG_SERVE_STORAGE: undefined }
  const container = runCli(['serve', join(root, 'pkg'), '--port', '0'], env)
  assert.equal(container.status, 2)
  assert.match(container.stderr, /^pkg-serve: the container directory .*pkg\/pkg does not exist: STORAGE is the directory that holds the container directory "pkg" \(did you mean .*\?\)\n$/)
  const scheme = runCli(['serve', 'htp://acct.blob.core.windows.net/?sv=2024&sig=SECRETSIG', '--port', '0'], env)
  assert.equal(scheme.status, 2)
  assert.match(scheme.stderr, /^pkg-serve: STORAGE "htp:\/\/acct\.blob\.core\.windows\.net\/" starts with "htp:\/\/": use https:\/\//)
  assert.doesNotMatch(scheme.stderr, /SECRETSIG|sv=2024/)
  const token = runCli(['serve', 'http://127.0.0.1:1/devstoreaccount1', '--port', '0'], env)
  assert.match(token.stderr, /is http:\/\/, where a token credential cannot be used: give a SAS URL .* or AZURE_STORAGE_CONNECTION_STRING/)
})
