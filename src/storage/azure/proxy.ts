// Which proxy a storage endpoint is reached through, from the environment, by exactly the rules of
// the Azure SDK (@typespec/ts-http-runtime's proxyPolicy), which reads the manifest, so that
// downloads take the same route: HTTPS_PROXY, else ALL_PROXY, else HTTP_PROXY (a non-empty upper
// case value first, then lower case), unless NO_PROXY names the host as the URL spells it
// (lower case, IPv6 in brackets) exactly or, for an entry starting with ".", the host is that
// domain or below it. Where the SDK would misread a value (no scheme, blank), this refuses it
// with a message instead. On AKS with the HTTP proxy feature these variables are in every pod.

import { UserError } from '../../lib/errors.ts'
export class ProxyConfigError extends UserError {
  override name = 'ProxyConfigError'
}

export interface ProxyTarget {
  readonly hostname: string
  readonly port: number
  /** "user:password" for Proxy-Authorization, already decoded. */
  readonly auth?: string
  /** For logs: the proxy's origin, never its credentials. */
  readonly shown: string
}

type Env = Readonly<Record<string, string | undefined>>

/** The SDK's reading: the upper-case variable if non-empty, else the lower-case one. */
function read (env: Env, name: string): string | undefined {
  const value = env[name] !== undefined && env[name] !== '' ? env[name] : env[name.toLowerCase()]
  return value !== undefined && value !== '' ? value : undefined
}

function bypassed (hostname: string, noProxy: string | undefined): boolean {
  for (const raw of (noProxy ?? '').split(',')) {
    const entry = raw.trim()
    if (entry === '') continue
    if (entry.startsWith('.') ? hostname.endsWith(entry) || hostname === entry.slice(1) : hostname === entry) return true
  }
  return false
}

export function proxyFor (endpoint: URL, env: Env): ProxyTarget | undefined {
  const spec = read(env, 'HTTPS_PROXY') ?? read(env, 'ALL_PROXY') ?? read(env, 'HTTP_PROXY')
  if (spec === undefined) return undefined
  if (bypassed(endpoint.hostname, read(env, 'NO_PROXY'))) return undefined
  let url: URL | undefined
  try {
    url = new URL(spec.trim())
  } catch {}
  if (url === undefined || !/^[a-z][a-z0-9+.-]*:\/\//i.test(spec.trim())) {
    throw new ProxyConfigError('HTTPS_PROXY (or ALL_PROXY/HTTP_PROXY) is not a proxy URL: write http://HOST:PORT')
  }
  const shown = `${url.protocol}//${url.host}`
  if (url.protocol !== 'http:') throw new ProxyConfigError(`proxy ${shown}: only http:// proxies are supported (HTTPS_PROXY=http://HOST:PORT)`)
  return {
    hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port !== '' ? Number(url.port) : 80,
    shown,
    ...(url.username !== '' && { auth: `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}` })
  }
}
