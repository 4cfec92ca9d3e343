import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { StorageSpecError, openStore, parseStorage, withSasFromEnv } from '../../src/storage/open.ts'
import { connectionStringFor } from '../helpers/azurite.ts'
import { tempDir } from '../helpers/tmp.ts'

const opts = { endpointSuffix: 'core.windows.net' }

test('STORAGE: account names, endpoint URLs, directories and file: URLs', () => {
  assert.deepEqual(parseStorage('mystorageaccountname', opts), { kind: 'azure', url: 'https://mystorageaccountname.blob.core.windows.net' })
  assert.deepEqual(parseStorage('acct123', { endpointSuffix: 'core.chinacloudapi.cn' }), { kind: 'azure', url: 'https://acct123.blob.core.chinacloudapi.cn' })
  assert.deepEqual(parseStorage('http://127.0.0.1:10000/devstoreaccount1', opts), { kind: 'azure', url: 'http://127.0.0.1:10000/devstoreaccount1' })
  assert.deepEqual(parseStorage('https://acct.blob.core.windows.net/', opts), { kind: 'azure', url: 'https://acct.blob.core.windows.net' })
  assert.deepEqual(parseStorage('./store', opts), { kind: 'local', directory: resolve('store') })
  assert.deepEqual(parseStorage('/srv/store', opts), { kind: 'local', directory: '/srv/store' })
  assert.deepEqual(parseStorage('file:///srv/store', opts), { kind: 'local', directory: '/srv/store' })
})

test('STORAGE: a connection string serves the same account or endpoint; a local directory wins', () => {
  const withCs = { ...opts, connectionString: 'DefaultEndpointsProtocol=https;AccountName=mystorageaccountname;AccountKey=S2V5;EndpointSuffix=core.windows.net' }
  assert.deepEqual(parseStorage(undefined, withCs), { kind: 'connection-string' })
  assert.deepEqual(parseStorage('mystorageaccountname', withCs), { kind: 'connection-string' })
  assert.deepEqual(parseStorage('https://mystorageaccountname.blob.core.windows.net/', withCs), { kind: 'connection-string' })
  assert.deepEqual(parseStorage('./store', withCs), { kind: 'local', directory: resolve('store') })
  const azurite = { ...opts, connectionString: connectionStringFor('http://127.0.0.1:10000/devstoreaccount1') }
  assert.deepEqual(parseStorage('http://127.0.0.1:10000/devstoreaccount1', azurite), { kind: 'connection-string' })
  assert.deepEqual(parseStorage('devstoreaccount1', azurite), { kind: 'connection-string' })
  assert.deepEqual(parseStorage('devstoreaccount1', { ...opts, connectionString: 'UseDevelopmentStorage=true' }), { kind: 'connection-string' })
})

test('STORAGE naming another account than the connection string is one line naming both, no secret', () => {
  const azurite = { ...opts, connectionString: connectionStringFor('http://127.0.0.1:10000/devstoreaccount1') }
  const oneLine = (pattern: RegExp) => (err: Error) => {
    assert.ok(err instanceof StorageSpecError)
    assert.match(err.message, pattern)
    assert.doesNotMatch(err.message, /\n|Eby8|AccountKey|sig=/)
    return true
  }
  assert.throws(() => parseStorage('mystorageaccountname', azurite),
    oneLine(/^STORAGE names account mystorageaccountname, but AZURE_STORAGE_CONNECTION_STRING is for account devstoreaccount1:/))
  assert.throws(() => parseStorage('http://127.0.0.1:10001/devstoreaccount1?sv=1&sig=SECRET', azurite),
    oneLine(/^STORAGE names endpoint http:\/\/127\.0\.0\.1:10001\/devstoreaccount1, but AZURE_STORAGE_CONNECTION_STRING is for account devstoreaccount1 at http:\/\/127\.0\.0\.1:10000\/devstoreaccount1:/))
  assert.throws(() => parseStorage('https://other.blob.core.windows.net', { ...opts, connectionString: 'AccountName=acct;AccountKey=S2V5' }),
    oneLine(/names endpoint https:\/\/other\.blob\.core\.windows\.net, but AZURE_STORAGE_CONNECTION_STRING is for account acct/))
})

test('STORAGE: a bare name that is a directory here gets the hint "did you mean ./store?"', async (t) => {
  const cwd = await tempDir(t)
  await mkdir(join(cwd, 'store'))
  assert.throws(() => parseStorage('store', { ...opts, cwd }), /STORAGE "store" is read as a storage account name, but \.\/store is a directory here: did you mean \.\/store\?/)
  assert.deepEqual(parseStorage('./store', { ...opts, cwd }), { kind: 'local', directory: join(cwd, 'store') })
  assert.deepEqual(parseStorage('other', { ...opts, cwd }), { kind: 'azure', url: 'https://other.blob.core.windows.net' })
})

test('STORAGE: a mistyped scheme is refused without echoing the query (a SAS signature)', () => {
  for (const spec of ['htp://acct.blob.core.windows.net/?sv=2024&sig=SECRETSIG', 'ftp://host/x?sig=SECRETSIG#frag']) {
    assert.throws(() => parseStorage(spec, opts), (err: Error) => {
      assert.match(err.message, /starts with "(htp|ftp):\/\/": use https:\/\//)
      assert.ok(!err.message.includes('SECRETSIG') && !err.message.includes('sv=2024') && !err.message.includes('?'), err.message)
      return true
    })
  }
})

test('openStore: http:// with a token credential, and the container directory given as STORAGE, are explained', async (t) => {
  const storage = { container: 'pkg', endpointSuffix: 'core.windows.net', azureJson: '/nonexistent', storageTimeout: 30 }
  await assert.rejects(openStore({ ...storage, storage: 'http://127.0.0.1:1/devstoreaccount1' }, {}),
    /STORAGE http:\/\/127\.0\.0\.1:1\/devstoreaccount1 is http:\/\/, where a token credential cannot be used: give a SAS URL .* or AZURE_STORAGE_CONNECTION_STRING/)
  const dir = await tempDir(t)
  await mkdir(join(dir, 'store', 'pkg'), { recursive: true })
  await assert.rejects(openStore({ ...storage, storage: join(dir, 'store', 'pkg') }, {}),
    /the container directory .*store\/pkg\/pkg does not exist: STORAGE is the directory that holds the container directory "pkg" \(did you mean .*store\?\)/)
  const opened = await openStore({ ...storage, storage: join(dir, 'store') }, {})
  await opened.store.close()
})

test('STORAGE: bad values are errors that say what is expected', () => {
  assert.throws(() => parseStorage(undefined, opts), StorageSpecError)
  assert.throws(() => parseStorage('My_Account', opts), /not a storage account name \(3-24 lowercase letters and digits\)/)
  assert.throws(() => parseStorage('ab', opts), /write \.\/ab for a directory/)
})

test('STORAGE: a connection string or key given as STORAGE is refused without repeating it', () => {
  const secret = 'DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0/a2V5+K2V5==;EndpointSuffix=core.windows.net'
  for (const spec of [secret, `/${secret}`, 'SharedAccessSignature=sv=2020&sig=SECRETSIG']) {
    assert.throws(() => parseStorage(spec, opts), (err: Error) => {
      assert.match(err.message, /looks like a connection string: pass it in AZURE_STORAGE_CONNECTION_STRING/)
      assert.ok(!err.message.includes('c2VjcmV0') && !err.message.includes('SECRETSIG'))
      return true
    })
  }
  assert.throws(() => parseStorage('Bad_Name?sig=SECRETSIG', opts), (err: Error) => !err.message.includes('SECRETSIG'))
})

test('STORAGE takes the SAS in PKG_SERVE_STORAGE only when both name the same endpoint', () => {
  const sas = 'https://acct.blob.core.windows.net/?sv=2024&sig=SECRETSIG'
  const suffix = 'core.windows.net'
  assert.equal(withSasFromEnv('acct', sas, suffix), sas)
  assert.equal(withSasFromEnv('https://acct.blob.core.windows.net', sas, suffix), sas)
  assert.equal(withSasFromEnv('https://ACCT.blob.core.windows.net/', sas, suffix), sas)
  // Another account or endpoint, a STORAGE with its own query, an env value without a SAS: as given.
  assert.equal(withSasFromEnv('other', sas, suffix), 'other')
  assert.equal(withSasFromEnv('http://acct.blob.core.windows.net', sas, suffix), 'http://acct.blob.core.windows.net')
  assert.equal(withSasFromEnv('acct', sas, 'core.chinacloudapi.cn'), 'acct')
  assert.equal(withSasFromEnv('https://acct.blob.core.windows.net/?sv=1&sig=MINE', sas, suffix), 'https://acct.blob.core.windows.net/?sv=1&sig=MINE')
  assert.equal(withSasFromEnv('acct', 'https://acct.blob.core.windows.net', suffix), 'acct')
  assert.equal(withSasFromEnv('./store', sas, suffix), './store')
  assert.equal(withSasFromEnv(undefined, sas, suffix), undefined)
})
