// Bad input on the command line: one readable line on stderr, a non-zero exit, no stack trace.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { runCli, runCliInProcess } from '../helpers/cli.ts'
import { tempDir } from '../helpers/tmp.ts'

function assertOneLineError (r: { status: number | null, stderr: string }, pattern: RegExp): void {
  assert.notEqual(r.status, 0)
  const lines = r.stderr.trimEnd().split('\n')
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`)
  assert.match(lines[0] ?? '', /^pkg-serve: /)
  assert.match(lines[0] ?? '', pattern)
  assert.doesNotMatch(r.stderr, /\n\s+at /)
}

const noAzure = { AZURE_STORAGE_CONNECTION_STRING: undefined, PKG_SERVE_STORAGE: undefined }

test('--version and --help', () => {
  const v = runCli(['--version'])
  assert.equal(v.status, 0)
  assert.match(v.stdout, /^\d+\.\d+\.\d+\n$/)
  const h = runCli(['serve', '--help'])
  assert.equal(h.status, 0)
  assert.match(h.stdout, /--poll-interval <seconds>/)
  assert.match(h.stdout, /env: PKG_SERVE_POLL_INTERVAL/)
  const none = runCli([])
  assert.equal(none.status, 2)
  assert.match(none.stderr, /Usage: pkg-serve/)
})

test('unknown commands and flags', async () => {
  assertOneLineError(await runCliInProcess(['serve', '--bogus', './x']), /unknown option '--bogus'/)
  assertOneLineError(await runCliInProcess(['srve']), /unknown command 'srve'/)
})

test('bad flag values name the flag, from argv or from PKG_SERVE_*', async (t) => {
  const dir = await tempDir(t)
  assertOneLineError(await runCliInProcess(['serve', '--port', 'abc', dir], noAzure), /invalid --port "abc" must be a number/)
  assertOneLineError(await runCliInProcess(['serve', dir], { ...noAzure, PKG_SERVE_PORT: '70000' }), /invalid --port "70000" must be 0 to 65535/)
  assertOneLineError(await runCliInProcess(['serve', '--poll-interval', '-1', dir], noAzure), /invalid --poll-interval "-1"/)
  assertOneLineError(await runCliInProcess(['serve', '--container', 'Bad_Name', dir], noAzure), /invalid --container "Bad_Name" must be an Azure container name/)
  assertOneLineError(await runCliInProcess(['serve', '--log-level', 'loud', dir], noAzure), /argument 'loud' is invalid.*Allowed choices are fatal, error/)
})

test('bad STORAGE values say what STORAGE can be', async () => {
  assertOneLineError(await runCliInProcess(['serve'], noAzure), /no STORAGE given: name a storage account, a blob endpoint URL or a local directory/)
  assertOneLineError(await runCliInProcess(['serve', 'Not_An_Account!'], noAzure), /STORAGE "Not_An_Account!" is not a storage account name/)
  assertOneLineError(await runCliInProcess(['serve', './no/such/dir'], noAzure), /local storage directory .*no\/such\/dir does not exist/)
  assertOneLineError(await runCliInProcess(['serve', 'file://host/x'], noAzure), /not a valid file: URL/)
})

test('a port in use is one line that says so', async (t) => {
  const dir = await tempDir(t)
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise<void>((resolve) => blocker.close(() => resolve())))
  const address = blocker.address()
  assert.ok(typeof address === 'object' && address !== null)
  const r = await runCliInProcess(['serve', '--port', String(address.port), '--log-level', 'silent', dir], noAzure)
  assertOneLineError(r, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${address.port}: the port is in use`))
})

test('a --host that does not resolve is one line that names the flag', async (t) => {
  const dir = await tempDir(t)
  const r = await runCliInProcess(['serve', '--port', '0', '--host', 'no-such-host.invalid', '--log-level', 'silent', dir], noAzure)
  assertOneLineError(r, /^pkg-serve: cannot listen on --host no-such-host\.invalid: this host cannot resolve it \((ENOTFOUND|EAI_AGAIN)\)/)
})

test('run: a missing action lists the actions that exist; bad flags name the flag', async (t) => {
  const dir = await tempDir(t)
  const { writeConfigMap } = await import('../helpers/configmap.ts')
  await writeConfigMap(dir, { install: '#!/bin/sh\n', cleanup: '#!/bin/sh\n' })
  const base = ['run', '--actions-dir', dir, '--host-dir', `${dir}/host`, '--state-dir', `${dir}/state`, '--no-nsenter']
  assertOneLineError(await runCliInProcess([...base, 'instal', dir], noAzure), /no action "instal" in .*; the actions there are: cleanup, install$/)
  assertOneLineError(await runCliInProcess(['run', '--actions-dir', `${dir}/none`, 'install', dir], noAzure), /the actions directory .*\/none does not exist or cannot be read \(is the ConfigMap mounted\?\)/)
  assertOneLineError(await runCliInProcess([...base, 'install'], noAzure), /missing required argument 'storage'/)
  assertOneLineError(await runCliInProcess([...base, '--on-failure', 'later', 'install', dir], noAzure), /argument 'later' is invalid. Allowed choices are exit, retry/)
  assertOneLineError(await runCliInProcess([...base, '--nsenter-target', 'self', 'install', dir], noAzure), /invalid --nsenter-target "self" must be a process id/)
  assertOneLineError(await runCliInProcess([...base, 'install', dir], { ...noAzure, PKG_SERVE_ONCE: 'maybe' }), /invalid PKG_SERVE_ONCE "maybe": use true or false/)
  await writeFile(`${dir}/a-file`, '')
  assertOneLineError(await runCliInProcess([...base, '--state-dir', `${dir}/a-file/state`, 'install', dir], noAzure), /cannot use the state dir .*\/a-file\/state \(--state-dir\): ENOTDIR/)
  // Refused before the name reaches a path: no state, no record on the node, no cgroup looked for.
  await rm(`${dir}/state`, { recursive: true, force: true })
  await rm(`${dir}/host`, { recursive: true, force: true })
  assertOneLineError(await runCliInProcess([...base, '../etc/passwd', dir], noAzure), /action "\.\.\/etc\/passwd" is not a file name/)
  assertOneLineError(await runCliInProcess([...base, 'a/../../b', dir], noAzure), /action "a\/\.\.\/\.\.\/b" is not a file name/)
  assert.equal(existsSync(`${dir}/state`), false, 'the state dir was written')
  assert.equal(existsSync(`${dir}/host`), false, 'the host dir was written')
})

test('the program reads the env it is given, not process.env', async (t) => {
  const dir = await tempDir(t)
  process.env.PKG_SERVE_LOG_LEVEL = 'loud'
  t.after(() => { delete process.env.PKG_SERVE_LOG_LEVEL })
  const { main } = await import('../../src/cli/program.ts')
  let stderr = ''
  const io = { out: () => {}, err: (s: string) => { stderr += s } }
  // With process.env read, 'loud' would be refused before the missing directory is reported.
  assert.equal(await main(['node', 'pkg-serve', 'serve', `${dir}/none`], {}, io), 2)
  assert.match(stderr, /local storage directory .*none does not exist/)
  stderr = ''
  assert.equal(await main(['node', 'pkg-serve', 'serve', `${dir}/none`], { PKG_SERVE_LOG_LEVEL: 'loud' }, io), 2)
  assert.match(stderr, /value 'loud' from env 'PKG_SERVE_LOG_LEVEL' is invalid/)
})
