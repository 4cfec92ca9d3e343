import { test } from 'node:test'
import assert from 'node:assert/strict'
import { proxyFor } from '../../../src/storage/azure/proxy.ts'

const blob = new URL('https://acct.blob.core.windows.net/pkg')

test('proxy: HTTPS_PROXY, else ALL_PROXY, else HTTP_PROXY, upper case before lower, as the Azure SDK reads them', () => {
  assert.equal(proxyFor(blob, {}), undefined)
  assert.equal(proxyFor(blob, { HTTPS_PROXY: '', https_proxy: 'http://lower:1' })?.hostname, 'lower', 'an empty upper-case value gives way')
  assert.deepEqual(proxyFor(blob, { HTTPS_PROXY: 'http://proxy.corp:3128' }), { hostname: 'proxy.corp', port: 3128, shown: 'http://proxy.corp:3128' })
  assert.equal(proxyFor(blob, { https_proxy: 'http://lower:1', HTTP_PROXY: 'http://plain:2' })?.hostname, 'lower')
  assert.equal(proxyFor(blob, { HTTPS_PROXY: 'http://upper:1', https_proxy: 'http://lower:1' })?.hostname, 'upper')
  assert.equal(proxyFor(blob, { ALL_PROXY: 'http://all:1', HTTP_PROXY: 'http://plain:2' })?.hostname, 'all')
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
  assert.equal(via('ACCT.blob.core.windows.net'), true, 'compared as the SDK does, case and all')
  assert.equal(via('localhost, .core.windows.net'), false)
  assert.equal(via('.acct.blob.core.windows.net'), false, 'the domain itself')
  assert.equal(via('core.windows.net'), true, 'without the dot: that host only')
  assert.equal(via('.windows.net.evil'), true)
  assert.equal(via('10.0.0.0/16,169.254.169.254'), true)
  assert.equal(via('127.0.0.1', new URL('http://127.0.0.1:10000/x')), false)
  assert.equal(proxyFor(blob, { HTTPS_PROXY: 'http://p:1', no_proxy: 'acct.blob.core.windows.net' }), undefined)
  assert.notEqual(proxyFor(blob, { HTTPS_PROXY: 'http://p:1', NO_PROXY: '', no_proxy: 'x' }), undefined)
  assert.equal(proxyFor(blob, { HTTPS_PROXY: 'http://p:1', NO_PROXY: '', no_proxy: 'acct.blob.core.windows.net' }), undefined, 'an empty NO_PROXY gives way')
  const v6 = new URL('https://[::1]:10000/x')
  assert.equal(proxyFor(v6, { HTTPS_PROXY: 'http://p:1', NO_PROXY: '[::1]' }), undefined, 'IPv6 as the URL spells it')
  assert.notEqual(proxyFor(v6, { HTTPS_PROXY: 'http://p:1', NO_PROXY: '::1' }), undefined)
})

test('proxy: a proxy it cannot use is an error that says what to write', () => {
  assert.throws(() => proxyFor(blob, { HTTPS_PROXY: 'https://proxy.corp:443' }), /only http:\/\/ proxies are supported/)
  for (const bad of ['http://[bad', 'proxy.corp:3128', '127.0.0.1:3128', ' ']) {
    assert.throws(() => proxyFor(blob, { HTTPS_PROXY: bad }), /is not a proxy URL: write http:\/\/HOST:PORT/, bad)
  }
})
