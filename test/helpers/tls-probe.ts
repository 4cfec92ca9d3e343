// Run as a child process with NODE_EXTRA_CA_CERTS set (trust is read at start-up): one HTTPS GET
// through the download client, straight or through a proxy. Prints "accepted STATUS" or
// "rejected CODE". Usage: tls-probe.ts HOST PORT [PROXY_HOST PROXY_PORT [USER:PASSWORD]]

import { createWire } from '../../src/storage/azure/wire.ts'

const [host = '', port = '0', proxyHost, proxyPort, proxyAuth] = process.argv.slice(2)
const wire = createWire({
  protocol: 'https:',
  hostname: host,
  port: Number(port),
  ...(proxyHost !== undefined && { proxy: { hostname: proxyHost, port: Number(proxyPort), shown: 'proxy', ...(proxyAuth !== undefined && { auth: proxyAuth }) } })
}, { requestTimeoutMs: 5000, idleTimeoutMs: 5000 })
try {
  const res = await wire.send({ method: 'HEAD', path: '/', headers: {}, what: 'probe' })
  process.stdout.write(`accepted ${res.status}\n`)
} catch (err) {
  process.stdout.write(`rejected ${(err as { code?: string }).code ?? (err as Error).message}\n`)
}
wire.close()
