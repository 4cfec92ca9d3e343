// Downloads from storage over TLS, as from Azure: `pkg-serve serve` reads Azurite through a TLS
// terminator of the test's own (certificate in test/fixtures/tls, trusted through
// NODE_EXTRA_CA_CERTS), and real curl downloads from it. Covers the download path end to end:
// sha256 checks on large and small blobs, ranges, concurrent small downloads sharing reads.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { connect, createServer as createNetServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import { join } from 'node:path'
import { createServer } from 'node:tls'
import { promisify } from 'node:util'
import { AZURITE_ACCOUNT, connectionStringFor, startAzurite } from '../helpers/azurite.ts'
import { NODE_ARGS, REPO, startCli } from '../helpers/cli.ts'

const exec = promisify(execFile)
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
const FIXTURES = join(REPO, 'test/fixtures/tls')

async function curl (args: string[]): Promise<{ code: number, stdout: Buffer }> {
  try {
    const { stdout } = await exec('curl', ['-sS', '--max-time', '60', ...args], { encoding: 'buffer', maxBuffer: 1 << 27 })
    return { code: 0, stdout }
  } catch (err) {
    const e = err as { code?: number, stdout?: Buffer }
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? Buffer.alloc(0) }
  }
}

test('downloads from storage over TLS', async (t) => {
  const azurite = await startAzurite(t)
  const container = await azurite.container('pkg')
  const large = randomBytes(20 * 1024 * 1024 + 123)
  const small = randomBytes(1500)
  await container.getBlockBlobClient('large.bin').uploadData(large)
  await container.getBlockBlobClient('small.bin').uploadData(small)
  const wrong = sha256(Buffer.from('another package'))
  await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from([
    `[large.good]\npath = 'large.bin'\nsha256 = '${sha256(large)}'`,
    `[large.bad]\npath = 'large.bin'\nsha256 = '${wrong}'`,
    `[small.good]\npath = 'small.bin'\nsha256 = '${sha256(small)}'`,
    `[small.bad]\npath = 'small.bin'\nsha256 = '${wrong}'`,
    "[small.plain]\npath = 'small.bin'\n"
  ].join('\n')))

  // TLS in front of Azurite, counting connections.
  let connections = 0
  const sockets = new Set<Socket>()
  const terminator = createServer({ key: readFileSync(join(FIXTURES, 'key.pem')), cert: readFileSync(join(FIXTURES, 'cert.pem')) }, (tlsSocket) => {
    connections++
    const upstream = connect(azurite.port, '127.0.0.1')
    sockets.add(tlsSocket).add(upstream)
    tlsSocket.pipe(upstream).pipe(tlsSocket)
    const drop = (): void => { tlsSocket.destroy(); upstream.destroy() }
    tlsSocket.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
  })
  terminator.listen(0, '127.0.0.1')
  await once(terminator, 'listening')
  t.after(() => { for (const s of sockets) s.destroy(); terminator.close() })
  const tlsPort = (terminator.address() as AddressInfo).port

  const cli = startCli(t, ['serve', '--port', '0', '--poll-interval', '0'], {
    AZURE_STORAGE_CONNECTION_STRING: connectionStringFor(`https://127.0.0.1:${tlsPort}/${AZURITE_ACCOUNT}`),
    NODE_EXTRA_CA_CERTS: join(FIXTURES, 'cert.pem')
  })
  const listening = await cli.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on'))
  const url = `http://127.0.0.1:${Number(listening.port)}`
  await t.test('ready over TLS', async () => {
    for (let i = 0; i < 100 && (await curl(['-o', '/dev/null', '-w', '%{http_code}', `${url}/readyz`])).stdout.toString() !== '200'; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    assert.equal((await curl(['-w', '%{http_code}', '-o', '/dev/null', `${url}/readyz`])).stdout.toString(), '200')
  })

  await t.test('a large blob arrives whole when its sha256 matches, and broken when it does not', async () => {
    // Together, and one slow: writes to clients cannot all complete at once.
    const goods = await Promise.all([[], [], ['--limit-rate', '40M']].map(async (extra) => await curl([...extra, `${url}/pkg/large/good`])))
    for (const good of goods) {
      assert.equal(good.code, 0)
      assert.equal(sha256(good.stdout), sha256(large))
    }
    const bad = await curl([`${url}/pkg/large/bad`])
    assert.notEqual(bad.code, 0, 'curl reports the broken transfer')
    assert.ok(bad.stdout.length < large.length, `${bad.stdout.length} of ${large.length} bytes arrived`)
  })

  await t.test('ranges come back exact', async () => {
    const part = await curl(['-r', '1000000-1999999', `${url}/pkg/large/good`])
    assert.deepEqual(part.stdout, large.subarray(1_000_000, 2_000_000))
    const tail = await curl(['-r', '-10', `${url}/pkg/small/plain`])
    assert.deepEqual(tail.stdout, small.subarray(small.length - 10))
  })

  await t.test('small blobs: concurrent downloads are all exact; a mismatch is a 502 before any byte', async () => {
    const results = await Promise.all(Array.from({ length: 24 }, async (_, i) => await curl([`${url}/pkg/small/${i % 2 === 0 ? 'good' : 'plain'}`])))
    for (const r of results) assert.deepEqual(r.stdout, small)
    const bad = await curl(['-w', '\n%{http_code}', `${url}/pkg/small/bad`])
    const [body, code] = bad.stdout.toString('latin1').split('\n')
    assert.equal(code, '502')
    assert.match(body ?? '', /sha256 mismatch/)
  })

  // Kept-alive TLS connections carry the downloads (a handful, not one per request).
  assert.ok(connections <= 16, `${connections} TLS connections for ~30 downloads`)
  t.diagnostic(`${connections} TLS connections to storage`)

  await t.test('through an HTTPS_PROXY: tunnels for downloads and the manifest, credentials never logged', async () => {
    const tunnels: string[] = []
    const proxy = createNetServer((client) => {
      client.on('error', () => {})
      client.once('data', (d: Buffer) => {
        const head = d.toString('latin1')
        tunnels.push(head.split('\r\n').filter((l) => /^(CONNECT|proxy-authorization)/i.test(l)).join(' | '))
        const [, host, port] = /^CONNECT ([^:]+):(\d+) /.exec(head) ?? []
        if (!/proxy-authorization: basic dXNlcjpzM2NyM3Q=/i.test(head) || host === undefined) {
          client.end('HTTP/1.1 407 Proxy Authentication Required\r\n\r\n')
          return
        }
        const upstream = connect(Number(port), host, () => {
          client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
          client.pipe(upstream).pipe(client)
        })
        sockets.add(client).add(upstream)
        upstream.on('error', () => client.destroy())
      })
    })
    proxy.listen(0, '127.0.0.1')
    await once(proxy, 'listening')
    t.after(() => { proxy.close() })
    const proxyUrl = `http://user:s3cr3t@127.0.0.1:${(proxy.address() as AddressInfo).port}`
    const proxied = startCli(t, ['serve', '--port', '0', '--poll-interval', '0'], {
      AZURE_STORAGE_CONNECTION_STRING: connectionStringFor(`https://127.0.0.1:${tlsPort}/${AZURITE_ACCOUNT}`),
      NODE_EXTRA_CA_CERTS: join(FIXTURES, 'cert.pem'),
      HTTPS_PROXY: proxyUrl,
      NO_PROXY: 'localhost'
    })
    const up = await proxied.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on'))
    const base = `http://127.0.0.1:${Number(up.port)}`
    for (let i = 0; i < 100 && (await curl(['-o', '/dev/null', '-w', '%{http_code}', `${base}/readyz`])).stdout.toString() !== '200'; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const before = tunnels.length
    const good = await curl([`${base}/pkg/large/good`])
    assert.equal(good.code, 0)
    assert.equal(sha256(good.stdout), sha256(large))
    assert.ok(tunnels.length > before, 'the download went through the proxy')
    assert.ok(tunnels.every((tunnel) => tunnel.startsWith(`CONNECT 127.0.0.1:${tlsPort} HTTP/1.1`)), tunnels.join('\n'))
    const logs = JSON.stringify(proxied.logs) + proxied.stderr()
    assert.match(logs, new RegExp(`through proxy http://127\\.0\\.0\\.1:${(proxy.address() as AddressInfo).port}`))
    assert.ok(!logs.includes('s3cr3t'), 'the proxy password is never logged')

    // Through a tunnel the certificate is checked against the storage host, not the proxy's
    // name: the test certificate names 127.0.0.1 (and localhost), not 127.0.0.2.
    const probe = async (...args: string[]): Promise<string> => (await exec(process.execPath, [...NODE_ARGS, join(REPO, 'test/helpers/tls-probe.ts'), ...args], {
      cwd: REPO, encoding: 'utf8', env: { ...process.env, NODE_EXTRA_CA_CERTS: join(FIXTURES, 'cert.pem') }
    })).stdout.trim()
    const proxyPort = String((proxy.address() as AddressInfo).port)
    const other = createServer({ key: readFileSync(join(FIXTURES, 'key.pem')), cert: readFileSync(join(FIXTURES, 'cert.pem')) }, (s) => {
      s.on('error', () => {}).on('data', () => { s.end('HTTP/1.1 204 No Content\r\n\r\n') })
    })
    other.listen(0, '127.0.0.2')
    await once(other, 'listening')
    t.after(() => { other.close() })
    const otherPort = String((other.address() as AddressInfo).port)
    assert.equal(await probe('127.0.0.1', String(tlsPort), '127.0.0.1', proxyPort, 'user:s3cr3t'), 'accepted 403')
    assert.equal(await probe('127.0.0.2', otherPort), 'rejected ERR_TLS_CERT_ALTNAME_INVALID')
    assert.equal(await probe('127.0.0.2', otherPort, '127.0.0.1', proxyPort, 'user:s3cr3t'), 'rejected ERR_TLS_CERT_ALTNAME_INVALID')
  })
})
