// The zod schemas are the one definition of each command's configuration: defaults from the
// command line arrive as strings and are coerced; a bad value is one message naming the flag.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ConfigError, parseBooleanEnv, parseConfig, publishConfigSchema, runConfigSchema, serveConfigSchema, serverOptionsSchema, storageOptionsSchema } from '../../src/cli/config.ts'

const flagOf = (key: string): string => `--${key}`
const storage = { container: 'pkg', endpointSuffix: 'core.windows.net', azureJson: '/etc/kubernetes/azure.json', storageTimeout: '30' }
const server = { ...storage, port: '8080', host: 'localhost', manifest: 'packages.toml', pollInterval: '30', readConnections: '4', readChunk: '8', readAhead: '64', readMinSpeedup: '1.5' }

test('serve: strings from the command line become numbers; the result is frozen', () => {
  const config = parseConfig(serveConfigSchema, { ...server, logLevel: 'info' }, flagOf)
  assert.equal(config.port, 8080)
  assert.equal(config.pollInterval, 30)
  assert.equal(config.storageTimeout, 30)
  assert.ok(Object.isFrozen(config))
})

test('the command schemas share the storage and server flags rather than restating them', () => {
  for (const key of Object.keys(storageOptionsSchema.shape)) {
    assert.ok(key in serveConfigSchema.shape && key in runConfigSchema.shape && key in publishConfigSchema.shape, key)
  }
  for (const key of Object.keys(serverOptionsSchema.shape)) assert.ok(key in runConfigSchema.shape, key)
})

test('every problem is named by its flag, with the value given, in one message', () => {
  assert.throws(() => parseConfig(serveConfigSchema, { ...server, port: '70000', pollInterval: '-1', logLevel: 'info' }, flagOf), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.match(err.message, /^invalid --port "70000" must be 0 to 65535; --pollInterval "-1" must be 0 \(off\) or more seconds$/)
    return true
  })
  assert.throws(() => parseConfig(serveConfigSchema, { ...server, manifest: '../up.toml', logLevel: 'info' }, flagOf), /--manifest "\.\.\/up\.toml" must be a blob name in the container/)
  assert.throws(() => parseConfig(serveConfigSchema, { ...server, container: 'UPPER', logLevel: 'info' }, flagOf), /--container "UPPER" must be an Azure container name/)
  assert.throws(() => parseConfig(serveConfigSchema, { ...server, storageTimeout: '0.01', logLevel: 'info' }, flagOf), /--storageTimeout "0\.01" must be at least 0\.1 seconds/)
})

test('run: the node path must be absolute and the nsenter target a process id', () => {
  const run = {
    ...server,
    logLevel: 'info',
    action: 'install',
    storage: 'acct',
    scriptArgs: ['--force'],
    actionsDir: '/opt/actions',
    hostDir: '/mnt/actions',
    hostPath: '/opt/actions',
    nsenter: true,
    nsenterTarget: '1',
    scriptCgroup: 'pod',
    once: false,
    force: false,
    onFailure: 'exit',
    watch: false,
    watchInterval: '5',
    stateDir: '/tmp/pkg-serve',
    keepServing: false,
    exitOnSuccess: false,
    retryDelay: '5',
    retryMaxDelay: '300',
    killGrace: '10',
    readyTimeout: '60'
  }
  assert.deepEqual(parseConfig(runConfigSchema, run, flagOf).scriptArgs, ['--force'])
  assert.throws(() => parseConfig(runConfigSchema, { ...run, hostPath: 'opt/actions' }, flagOf), /--hostPath "opt\/actions" must be an absolute path on the node/)
  assert.throws(() => parseConfig(runConfigSchema, { ...run, nsenterTarget: '0' }, flagOf), /must be a process id/)
  assert.throws(() => parseConfig(runConfigSchema, { ...run, storage: '' }, flagOf), /STORAGE must not be empty/)
})

test('boolean variables read true/false words and nothing else', () => {
  for (const yes of ['1', 'true', 'TRUE', 'yes', 'on', ' on ']) assert.equal(parseBooleanEnv('PKG_SERVE_ONCE', yes), true, yes)
  for (const no of ['0', 'false', 'No', 'off', '']) assert.equal(parseBooleanEnv('PKG_SERVE_ONCE', no), false, no)
  assert.throws(() => parseBooleanEnv('PKG_SERVE_ONCE', 'maybe'), /invalid PKG_SERVE_ONCE "maybe": use true or false/)
})

test('parallel read flags: whole connections 1 to 32, a chunk of at least 64 KiB, a budget that is not negative', () => {
  const parsed = parseConfig(serveConfigSchema, { ...server, readConnections: '1', readChunk: '0.0625', readAhead: '0', logLevel: 'info' }, flagOf)
  assert.deepEqual([parsed.readConnections, parsed.readChunk, parsed.readAhead], [1, 0.0625, 0])
  assert.throws(() => parseConfig(serveConfigSchema, { ...server, readConnections: '0', logLevel: 'info' }, flagOf), /--readConnections "0" must be 1 \(off\) to 32/)
  assert.throws(() => parseConfig(serveConfigSchema, { ...server, readConnections: '2.5', logLevel: 'info' }, flagOf), /must be a whole number/)
  assert.throws(() => parseConfig(serveConfigSchema, { ...server, readChunk: '0.01', logLevel: 'info' }, flagOf), /--readChunk "0\.01" must be at least 0\.0625 MiB/)
  assert.throws(() => parseConfig(serveConfigSchema, { ...server, readAhead: '-1', logLevel: 'info' }, flagOf), /--readAhead "-1" must not be negative/)
  assert.throws(() => parseConfig(serveConfigSchema, { ...server, readMinSpeedup: 'fast', logLevel: 'info' }, flagOf), /--readMinSpeedup "fast" must be a number/)
  assert.equal(parseConfig(serveConfigSchema, { ...server, readMinSpeedup: '0', logLevel: 'info' }, flagOf).readMinSpeedup, 0)
})
