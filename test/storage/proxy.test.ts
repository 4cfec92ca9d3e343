import { test } from 'node:test'
import assert from 'node:assert/strict'
import { proxyFor } from '../../src/storage/proxy.ts'

const blob = new URL('https://acct.blob.core.windows.net/pkg')

test('proxy: HTTPS_PROXY, else ALL_PROXY, else HTTP_PROXY, upper case before lower, as the Azure SDK reads them', () => {
  assert.equal(proxyFor(blob, {}), undefined)
  assert.equal(proxyFor(blob, { HTTPS_PROXY: ' ' }), undefined)
  assert.deepEqual(proxyFor(blob, { HTTPS_PROXY: 'http://proxy.corp:3128' }), { hostname: 'proxy.corp', port: 3128, shown: 'http://proxy.corp:3128' })
  assert.equal(proxyFor(blob, { https_proxy: 'http://lower:1', HTTP_PROXY: 'http://plain:2' })?.hostname, 'lower')
  assert.equal(proxyFor(blob, { HTTPS_PROXY: 'http://upper:1', https_proxy: 'http://lower:1' })?.hostname, 'upper')
  assert.equal(proxyFor(blob, { ALL_PROXY: 'http://all:1', HTTP_PROXY: 'http://plain:2' })?.hostname, 'all')
  assert.equal(proxyFor(blob, { HTTP_PROXY: 'plain:8080' })?.port, 8080, 'a bare host:port is http')
  assert.equal(proxyFor(blob, { HTTP_PROXY: 'http://plain' })?.port, 80)
  assert.equal(proxyFor(new URL('http://127.0.0.1:10000/devstoreaccount1'), { HTTP_PROXY: 'http://[::1]:3128' })?.hostname, '::1')
})

test('proxy: credentials are used for the proxy and never shown', () => {
  const p = proxyFor(blob, { HTTPS_PROXY: 'http://user%40corp:p%3Ass@proxy.corp:3128' })
  assert.equal(p?.auth, 'user@corp:p:ss')
  assert.equal(p?.shown, 'http://proxy.corp:3128')
})

test('proxy: NO_PROXY names hosts exactly, or a domain and below with a leading dot', () => {
  const via = (noProxy: string, url = blob): boolean => proxyFor(url, { HTTPS_PROXY: 'http://p:1', NO_PROXY: noProxy }) !== undefined
  assert.equal(via('acct.blob.core.windows.net'), false)
  assert.equal(via('ACCT.blob.core.windows.net'), false)
  assert.equal(via('localhost, .core.windows.net'), false)
  assert.equal(via('.acct.blob.core.windows.net'), false, 'the domain itself')
  assert.equal(via('core.windows.net'), true, 'without the dot: that host only')
  assert.equal(via('.windows.net.evil'), true)
  assert.equal(via('10.0.0.0/16,169.254.169.254'), true)
  assert.equal(via('127.0.0.1', new URL('http://127.0.0.1:10000/x')), false)
  assert.equal(proxyFor(blob, { HTTPS_PROXY: 'http://p:1', no_proxy: 'acct.blob.core.windows.net' }), undefined)
})

test('proxy: a proxy it cannot use is an error that says what to write', () => {
  assert.throws(() => proxyFor(blob, { HTTPS_PROXY: 'https://proxy.corp:443' }), /only http:\/\/ proxies are supported/)
  assert.throws(() => proxyFor(blob, { HTTPS_PROXY: 'http://[bad' }), /not a valid URL: write http:\/\/HOST:PORT/)
})
