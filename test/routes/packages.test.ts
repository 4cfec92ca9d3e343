import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { localApp } from '../helpers/app.ts'

const DEB = Buffer.from('!<arch>\ndebian-binary   fake deb for tests\n')
const MANIFEST = `
[mypackage.latest]
path = 'mypackage-123456.deb'

[mypackage.'1.2.3']
path = 'pool/mypackage-1.2.3.bin'
content_type = 'application/vnd.debian.binary-package'
filename = 'mypackage_1.2.3_amd64.deb'

[tool.v1]
path = 'tool'

[notes.v1]
path = 'notes.txt'
filename = 'résumé "final".txt'

[ghost.v1]
path = 'not-uploaded.deb'
`

function fixture (t: Parameters<typeof localApp>[0]) {
  return localApp(t, {
    'packages.toml': MANIFEST,
    'mypackage-123456.deb': DEB,
    'pool/mypackage-1.2.3.bin': 'version 1.2.3',
    tool: 'binary tool',
    'notes.txt': 'notes',
    'unnamed-secret.bin': 'UNNAMED-BLOB-CONTENT'
  })
}

test('GET /pkg/:name/:tag streams the blob with every header', async (t) => {
  const { app } = await fixture(t)
  const res = await app.inject('/pkg/mypackage/latest')
  assert.equal(res.statusCode, 200)
  assert.deepEqual(res.rawPayload, DEB)
  assert.equal(res.headers['content-length'], String(DEB.length))
  assert.equal(res.headers['content-type'], 'application/x-debian-package')
  assert.equal(res.headers['accept-ranges'], 'bytes')
  assert.match(String(res.headers.etag), /^"[0-9a-f-]+"$/)
  assert.ok(!Number.isNaN(Date.parse(String(res.headers['last-modified']))))
  assert.equal(res.headers['content-disposition'], 'attachment; filename="mypackage-123456.deb"')

  const pinned = await app.inject('/pkg/mypackage/1.2.3')
  assert.equal(pinned.body, 'version 1.2.3')
  assert.equal(pinned.headers['content-type'], 'application/vnd.debian.binary-package')
  assert.equal(pinned.headers['content-disposition'], 'attachment; filename="mypackage_1.2.3_amd64.deb"')

  const tool = await app.inject('/pkg/tool/v1')
  assert.equal(tool.headers['content-type'], 'application/octet-stream')

  const notes = await app.inject('/pkg/notes/v1')
  assert.equal(notes.headers['content-type'], 'text/plain')
  // RFC 6266: an ASCII fallback plus the exact UTF-8 name; quotes escaped, no header injection.
  assert.equal(notes.headers['content-disposition'], 'attachment; filename="r_sum_ \\"final\\".txt"; filename*=UTF-8\'\'r%C3%A9sum%C3%A9%20%22final%22.txt')
})

test('HEAD gives the same headers and no body', async (t) => {
  const { app } = await fixture(t)
  const get = await app.inject('/pkg/mypackage/latest')
  const head = await app.inject({ method: 'HEAD', url: '/pkg/mypackage/latest' })
  assert.equal(head.statusCode, 200)
  assert.equal(head.body, '')
  for (const h of ['content-length', 'content-type', 'etag', 'last-modified', 'accept-ranges', 'content-disposition']) {
    assert.equal(head.headers[h], get.headers[h], h)
  }
})

test('Range, If-Range and If-None-Match', async (t) => {
  const { app } = await fixture(t)
  const { headers } = await app.inject('/pkg/mypackage/latest')
  const etag = String(headers.etag)

  const part = await app.inject({ url: '/pkg/mypackage/latest', headers: { range: 'bytes=2-5' } })
  assert.equal(part.statusCode, 206)
  assert.deepEqual(part.rawPayload, DEB.subarray(2, 6))
  assert.equal(part.headers['content-range'], `bytes 2-5/${DEB.length}`)
  assert.equal(part.headers['content-length'], '4')

  const tail = await app.inject({ url: '/pkg/mypackage/latest', headers: { range: 'bytes=-3', 'if-range': etag } })
  assert.equal(tail.statusCode, 206)
  assert.deepEqual(tail.rawPayload, DEB.subarray(DEB.length - 3))

  const stale = await app.inject({ url: '/pkg/mypackage/latest', headers: { range: 'bytes=2-5', 'if-range': '"old"' } })
  assert.equal(stale.statusCode, 200)
  assert.deepEqual(stale.rawPayload, DEB)

  const outside = await app.inject({ url: '/pkg/mypackage/latest', headers: { range: `bytes=${DEB.length}-` } })
  assert.equal(outside.statusCode, 416)
  assert.equal(outside.headers['content-range'], `bytes */${DEB.length}`)
  assert.equal(outside.json().statusCode, 416)
  assert.match(outside.json().message, /outside \[mypackage\.latest\]/)

  const cached = await app.inject({ url: '/pkg/mypackage/latest', headers: { 'if-none-match': etag } })
  assert.equal(cached.statusCode, 304)
  assert.equal(cached.body, '')
  assert.equal(cached.headers.etag, etag)
})

test('unknown names and tags are 404s that say what exists', async (t) => {
  const { app } = await fixture(t)
  const noPackage = await app.inject('/pkg/nope/latest')
  assert.equal(noPackage.statusCode, 404)
  assert.deepEqual(Object.keys(noPackage.json()).sort(), ['error', 'message', 'statusCode'])
  assert.equal(noPackage.json().error, 'Not Found')
  assert.equal(noPackage.json().message, 'no package named "nope"; packages: ghost, mypackage, notes, tool')

  const noTag = await app.inject('/pkg/mypackage/9.9')
  assert.equal(noTag.statusCode, 404)
  assert.equal(noTag.json().message, 'package "mypackage" has no tag "9.9"; its tags: 1.2.3, latest')

  const noRoute = await app.inject('/nothing-here')
  assert.equal(noRoute.statusCode, 404)
  assert.match(noRoute.json().message, /try GET \/pkg/)

  // A name longer than any can be, a path that is not a URL: refused by the router, in the same
  // shape as every other error, without echoing the path.
  for (const [url, statusCode, error] of [[`/pkg/${'a'.repeat(2000)}/latest`, 404, 'Not Found'], [`/pkg/mypackage/${'b'.repeat(400)}`, 404, 'Not Found'], ['/pkg/mypackage/lat%ZZest', 400, 'Bad Request']] as const) {
    const res = await app.inject(url)
    assert.equal(res.statusCode, statusCode, url)
    assert.deepEqual(res.json(), { statusCode, error, message: res.json().message })
    assert.match(res.json().message, /try GET \/pkg/)
    assert.ok(!res.body.includes('aaaaaaaaaa') && !res.body.includes('bbbbbbbbbb') && !res.body.includes('%ZZ'), res.body)
  }
})

test('a blob the manifest names but storage lacks is a 404 naming the blob', async (t) => {
  const { app } = await fixture(t)
  const res = await app.inject('/pkg/ghost/v1')
  assert.equal(res.statusCode, 404)
  assert.match(res.json().message, /blob "not-uploaded\.deb" does not exist, but the manifest names it for \[ghost\.v1\]/)
  const head = await app.inject({ method: 'HEAD', url: '/pkg/ghost/v1' })
  assert.equal(head.statusCode, 404)
})

test('listings', async (t) => {
  const { app } = await fixture(t)
  const all = await app.inject('/pkg')
  assert.equal(all.statusCode, 200)
  assert.deepEqual(all.json().packages.map((p: { name: string }) => p.name), ['ghost', 'mypackage', 'notes', 'tool'])
  assert.deepEqual(all.json().packages[1], {
    name: 'mypackage',
    tags: [
      { tag: '1.2.3', path: 'pool/mypackage-1.2.3.bin', url: '/pkg/mypackage/1.2.3' },
      { tag: 'latest', path: 'mypackage-123456.deb', url: '/pkg/mypackage/latest' }
    ]
  })
  assert.deepEqual((await app.inject('/pkg/')).json(), all.json())
  const one = await app.inject('/pkg/mypackage')
  assert.deepEqual(one.json(), all.json().packages[1])
  assert.equal((await app.inject('/pkg/nope')).statusCode, 404)
})

test('no manifest yet: packages are 503 with Retry-After, /readyz is 503, /healthz is 200', async (t) => {
  const { app, dir } = await localApp(t, { 'a.deb': 'a' })
  for (const url of ['/pkg', '/pkg/a', '/pkg/a/latest']) {
    const res = await app.inject(url)
    assert.equal(res.statusCode, 503, url)
    assert.equal(res.headers['retry-after'], '5')
    assert.match(res.json().message, /no package manifest is loaded yet: blob "packages\.toml" does not exist; retry in 5s/)
  }
  const ready = await app.inject('/readyz')
  assert.equal(ready.statusCode, 503)
  assert.equal(ready.json().ready, false)
  assert.match(ready.json().manifest.lastError.message, /packages\.toml/)
  assert.equal((await app.inject('/healthz')).statusCode, 200)

  // It keeps retrying on its own and becomes ready when the manifest appears.
  await writeFile(join(dir, 'packages.toml'), "[a.latest]\npath = 'a.deb'\n")
  const deadline = Date.now() + 5000
  while ((await app.inject('/readyz')).statusCode !== 200) {
    assert.ok(Date.now() < deadline, 'not ready 5s after the manifest appeared')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  assert.equal((await app.inject('/pkg/a/latest')).body, 'a')
})

test('/readyz and /metrics report the manifest and traffic', async (t) => {
  const { app } = await fixture(t)
  const ready = await app.inject('/readyz')
  assert.equal(ready.statusCode, 200)
  const body = ready.json()
  assert.equal(body.ready, true)
  assert.match(body.manifest.etag, /^"/)
  assert.ok(!Number.isNaN(Date.parse(body.manifest.loadedAt)))
  assert.equal(body.manifest.entries, 5)
  assert.equal(body.manifest.lastError, null)

  await app.inject('/pkg/mypackage/latest')
  await app.inject('/pkg/ghost/v1')
  await app.inject('/pkg/mypackage/lat%ZZest') // refused by the router: counted all the same
  const metrics = await app.inject('/metrics')
  assert.equal(metrics.statusCode, 200)
  assert.match(String(metrics.headers['content-type']), /^text\/plain/)
  assert.match(metrics.body, /pkg_serve_http_requests_total\{method="GET",route="\/pkg\/:name\/:tag",status="200"\} 1/)
  assert.match(metrics.body, /pkg_serve_http_requests_total\{method="GET",route="\/pkg\/:name\/:tag",status="404"\} 1/)
  assert.match(metrics.body, /pkg_serve_http_requests_total\{method="GET",route="unmatched",status="400"\} 1/)
  assert.match(metrics.body, new RegExp(`pkg_serve_bytes_served_total ${DEB.length}`))
  assert.match(metrics.body, /pkg_serve_storage_errors_total\{kind="not-found"\} 1/)
  assert.match(metrics.body, /pkg_serve_manifest_reloads_total\{result="loaded"\} 1/)
  assert.match(metrics.body, /pkg_serve_manifest_loaded 1/)
})

test('no request reaches a blob the manifest does not name, whatever the encoding', async (t) => {
  const { app, root } = await fixture(t)
  await writeFile(join(root, 'outside.bin'), 'OUTSIDE-CONTAINER')
  const attempts = [
    '/pkg/unnamed-secret.bin', '/pkg/unnamed-secret.bin/latest', '/pkg/mypackage/../unnamed-secret.bin',
    '/pkg/mypackage/..%2funnamed-secret.bin', '/pkg/mypackage/..%2Funnamed-secret.bin', '/pkg/..%2f..%2foutside.bin/x',
    '/pkg/%2e%2e/%2e%2e', '/pkg/mypackage/%2e%2e%2funnamed-secret.bin', '/pkg/mypackage/latest/../../unnamed-secret.bin',
    '/pkg/mypackage/%252e%252e%252funnamed-secret.bin', '/pkg/mypackage/latest%00', '/pkg/mypackage%00/latest',
    '/pkg/mypackage/latest%2f..%2f..%2funnamed-secret.bin', '/pkg/%c0%ae%c0%ae/unnamed-secret.bin', '/pkg/mypackage/..\\unnamed-secret.bin',
    '/pkg/mypackage/%5c..%5cunnamed-secret.bin', '/unnamed-secret.bin', '/pkg//unnamed-secret.bin', '/pkg/mypackage//latest',
    '/pkg/__proto__/latest', '/pkg/constructor/name', '/pkg/mypackage/__proto__', '/pkg/mypackage/hasOwnProperty', '/pkg/mypackage/constructor',
    `/pkg/${'a'.repeat(5000)}/latest`, '/pkg/mypackage/latest?path=unnamed-secret.bin', '/pkg/mypackage/latest#../unnamed-secret.bin'
  ]
  for (const url of attempts) {
    const res = await app.inject(url)
    assert.ok(res.statusCode < 500, `${url} → ${res.statusCode}`)
    assert.ok(!res.body.includes('UNNAMED-BLOB-CONTENT') && !res.body.includes('OUTSIDE-CONTAINER'), `${url} leaked a blob`)
    if (res.statusCode === 200) assert.deepEqual(res.rawPayload, DEB, url)
  }
})

test('a sha256 mismatch found before the first byte is a 502 that says so, with no download headers', async (t) => {
  const { app } = await localApp(t, {
    'packages.toml': `[tiny.latest]\npath = 'tiny.bin'\nsha256 = '${'0'.repeat(64)}'\n`,
    'tiny.bin': 'one chunk only'
  })
  const res = await app.inject('/pkg/tiny/latest')
  assert.equal(res.statusCode, 502)
  assert.match(res.json().message, /^sha256 mismatch: the manifest says 0{64}, storage sent [0-9a-f]{64}: the blob in storage is not the package/)
  assert.equal(res.headers['content-disposition'], undefined)
  assert.match(String(res.headers['content-type']), /^application\/json/)
  assert.ok(!res.body.includes('one chunk only'))
})

test('a blob replaced between lookup and read is looked up again, and nothing of the first answer stays', async (t) => {
  const { mkdir, writeFile: write, rename } = await import('node:fs/promises')
  const { buildApp } = await import('../../src/app.ts')
  const { createLocalStore } = await import('../../src/storage/local.ts')
  const { tempDir } = await import('../helpers/tmp.ts')
  const dir = await tempDir(t)
  await mkdir(dir, { recursive: true })
  await write(join(dir, 'packages.toml'), "[p.latest]\npath = 'p.bin'\n")
  await write(join(dir, 'p.bin'), 'old version, long enough')
  const local = createLocalStore(dir)
  const oldEtag = (await local.stat('p.bin')).etag
  let reads = 0
  const store = {
    ...local,
    async read (path: string, options: { etag: string, start?: number, end?: number }) {
      if (reads++ === 0) {
        // Replaced between the lookup and the read.
        await write(join(dir, 'p.tmp'), 'new')
        await rename(join(dir, 'p.tmp'), join(dir, 'p.bin'))
      }
      return local.read(path, options)
    }
  }
  const app = await buildApp({ store, manifestPath: 'packages.toml', pollIntervalSeconds: 0 })
  t.after(() => app.close())
  // A resume of the old version: the new one must come whole, as a 200, without a Content-Range.
  const res = await app.inject({ url: '/pkg/p/latest', headers: { range: 'bytes=4-', 'if-range': oldEtag } })
  assert.equal(reads, 2)
  assert.equal(res.statusCode, 200)
  assert.equal(res.headers['content-range'], undefined)
  assert.equal(res.body, 'new')
})

test('methods other than GET and HEAD on a package: 405 with Allow', async (t) => {
  const { app } = await fixture(t)
  for (const method of ['DELETE', 'PUT', 'POST', 'PATCH', 'OPTIONS'] as const) {
    const res = await app.inject({ method, url: '/pkg/mypackage/latest' })
    assert.equal(res.statusCode, 405, method)
    assert.equal(res.headers.allow, 'GET, HEAD', method)
    assert.equal(res.json().error, 'Method Not Allowed')
  }
})

test('a suffix range longer than the blob is the whole blob, as 206', async (t) => {
  const { app } = await fixture(t)
  const res = await app.inject({ url: '/pkg/mypackage/latest', headers: { range: 'bytes=-100000' } })
  assert.equal(res.statusCode, 206)
  assert.equal(res.headers['content-range'], `bytes 0-${DEB.length - 1}/${DEB.length}`)
  assert.deepEqual(res.rawPayload, DEB)
})
