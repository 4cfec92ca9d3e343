import { test } from 'node:test'
import assert from 'node:assert/strict'
import { resolve } from 'node:path'
import { StorageSpecError, parseStorage } from '../../src/storage/open.ts'

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

test('STORAGE: a connection string wins over names and URLs, not over a local directory', () => {
  const withCs = { ...opts, connectionString: 'AccountName=x;AccountKey=y' }
  assert.deepEqual(parseStorage(undefined, withCs), { kind: 'connection-string' })
  assert.deepEqual(parseStorage('mystorageaccountname', withCs), { kind: 'connection-string' })
  assert.deepEqual(parseStorage('http://127.0.0.1:10000/devstoreaccount1', withCs), { kind: 'connection-string' })
  assert.deepEqual(parseStorage('./store', withCs), { kind: 'local', directory: resolve('store') })
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
