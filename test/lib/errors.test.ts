import { test } from 'node:test'
import assert from 'node:assert/strict'
import { UserError, errnoCode, isUserError } from '../../src/lib/errors.ts'
import { ConfigError } from '../../src/cli/config.ts'
import { ManifestError } from '../../src/manifest/parse.ts'
import { ActionError } from '../../src/launcher/actions.ts'
import { StorageSpecError } from '../../src/storage/open.ts'
import { CredentialConfigError } from '../../src/storage/azure/credentials.ts'
import { ProxyConfigError } from '../../src/storage/azure/proxy.ts'
import { StorageError } from '../../src/storage/types.ts'

test('every error meant for the user is a UserError; internal ones are not', () => {
  for (const err of [new ConfigError('x'), new ActionError('x'), new StorageSpecError('x'), new CredentialConfigError('x'), new ProxyConfigError('x')]) {
    assert.ok(isUserError(err), err.name)
    assert.ok(err instanceof UserError)
  }
  assert.ok(isUserError(new ManifestError('packages.toml', [])))
  assert.equal(isUserError(new Error('x')), false)
  assert.equal(isUserError(new StorageError('unreachable', 'x')), false)
  assert.equal(isUserError(undefined), false)
})

test('errnoCode reads a system error\'s code and nothing else', async () => {
  const { readFile } = await import('node:fs/promises')
  const err = await readFile('/nonexistent/pkg-serve').catch((e: unknown) => e)
  assert.equal(errnoCode(err), 'ENOENT')
  assert.equal(errnoCode(new Error('x')), undefined)
  assert.equal(errnoCode({ code: 42 }), undefined)
  assert.equal(errnoCode(null), undefined)
  assert.equal(errnoCode('ENOENT'), undefined)
})
