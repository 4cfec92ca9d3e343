// Run as a child process with NODE_EXTRA_CA_CERTS set (trust is read at start-up): one HTTPS HEAD
// through the download client, straight or through a proxy. Prints "accepted STATUS" or
// "rejected CODE". Usage: tls-probe.ts HOST PORT [PROXY_HOST PROXY_PORT [USER:PASSWORD]]

import { AnonymousCredential, ContainerClient } from '@azure/storage-blob'
import { createBlobHttp } from '../../src/storage/azure/http.ts'

const [host = '', port = '0', proxyHost, proxyPort, proxyAuth] = process.argv.slice(2)
const container = new ContainerClient(`https://${host}:${port}/devstoreaccount1/pkg`, new AnonymousCredential())
const http = createBlobHttp(container, {
  timeoutMs: 5000,
  ...(proxyHost !== undefined && { proxy: { hostname: proxyHost, port: Number(proxyPort), shown: 'proxy', ...(proxyAuth !== undefined && { auth: proxyAuth }) } })
})
try {
  const res = await http.send('HEAD', 'probe', {}, 5000)
  res.body.resume()
  process.stdout.write(`accepted ${res.status}\n`)
} catch (err) {
  const e = err as { code?: string, cause?: { code?: string } }
  process.stdout.write(`rejected ${e.cause?.code ?? e.code ?? (err as Error).message}\n`)
}
await http.close()
