// `npm run bench`: pkg-serve against the baselines, on this machine, in one run. Starts Azurite
// over TLS (a certificate made here with openssl: production storage is always HTTPS) and then
// over plain HTTP, pkg-serve (the built dist/, on Node 24 with the image's ENV settings, as the
// image runs it; `--node=current` for the Node running the bench) and, when installed, `rclone
// serve http` on the same container; runs every case alternately several times; prints medians
// and the ratios the performance issue asks for, and writes the figures to
// bench/results/latest.json.
// Figures are ratios against baselines measured in the same run: absolute numbers on a shared
// machine mean little. `--quick` finishes in about a minute (CI runs it to prove it works).

import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import type { ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { connect, createServer } from 'node:net'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AccountSASPermissions, BlobServiceClient } from '@azure/storage-blob'
import type { ContainerClient } from '@azure/storage-blob'
import { AZURITE_ACCOUNT, AZURITE_KEY, connectionStringFor, spawnAzurite } from '../scripts/azurite.ts'
import { IMAGE_ENV } from '../scripts/image-env.ts'
import type { AzuriteProcess } from '../scripts/azurite.ts'
import { startThrottleRelay } from './throttle-relay.ts'
import { READ_DEFAULTS } from '../src/cli/config.ts'

const QUICK = process.argv.includes('--quick')
/** `--only=parallel`: only the parallel-reads case (issue 16), on TLS storage seeded for it. */
const ONLY = /^--only=(.+)$/.exec(process.argv.find((a) => a.startsWith('--only=')) ?? '')?.[1]
const NODE_WANTED = /^--node=(.+)$/.exec(process.argv.find((a) => a.startsWith('--node=')) ?? '')?.[1] ?? '24'
const REPO = fileURLToPath(new URL('..', import.meta.url))
const MiB = 1024 * 1024
const GiB = 1024 * MiB
const cfg = QUICK
  ? { large: 128 * MiB, reps: 2, memEach: 32 * MiB, smallSeconds: 3, startReps: 2, reloadReps: 2 }
  : { large: 1 * GiB, reps: 5, memEach: 256 * MiB, smallSeconds: 10, startReps: 3, reloadReps: 3 }
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || '100')

const IMAGE_ENV_TEXT = Object.entries(IMAGE_ENV).map(([k, v]) => `${k}="${v}"`).join(' ')

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length === 0 ? NaN : s.length % 2 === 1 ? (s[m] ?? NaN) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2
}
const log = (msg: string): void => { process.stderr.write(`bench: ${msg}\n`) }

/**
 * The stops of every process the bench started and has not stopped yet. When the bench fails or
 * is signalled they all run before it exits: a pkg-serve left behind shares the bench's output,
 * and whoever waits for that output to end (CI) would wait forever.
 */
const running = new Set<() => Promise<void>>()
/** The inner run of the bench, when this is the outer one (see withCertificate). */
let child: ChildProcess | undefined
let shuttingDown: Promise<void> | undefined
function tracked (stop: () => Promise<void>): () => Promise<void> {
  let stopping: Promise<void> | undefined
  // Called twice (a case and the shutdown), it stops once; it stays listed until it has.
  const stopOnce = (): Promise<void> => (stopping ??= stop().finally(() => { running.delete(stopOnce) }))
  running.add(stopOnce)
  // Started while the bench shuts down (a case still running): stopped at once, and waited for.
  if (shuttingDown !== undefined) stopOnce().catch(() => {})
  return stopOnce
}
/**
 * Stops everything (whatever starts meanwhile too; in the outer run, the inner one), then exits
 * 1; a second call waits for the first.
 */
function shutdown (): Promise<void> {
  shuttingDown ??= (async () => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      await exited
    }
    while (running.size > 0) await Promise.allSettled([...running].map(async (stop) => { await stop() }))
    process.exit(1)
  })()
  return shuttingDown
}
async function azuriteTracked (options: Parameters<typeof spawnAzurite>[0]): Promise<AzuriteProcess> {
  const azurite = await spawnAzurite(options)
  return { ...azurite, stop: tracked(azurite.stop) }
}

function cpuSeconds (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
}
function rssMiB (pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024
}
/** Samples a process's RSS every 20 ms; returns the peak when stopped. */
function rssPeak (pid: number): () => number {
  let peak = rssMiB(pid)
  const timer = setInterval(() => { try { peak = Math.max(peak, rssMiB(pid)) } catch { /* gone */ } }, 20)
  return () => { clearInterval(timer); return peak }
}

async function waitFor (url: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const res = await fetch(url)
      await res.arrayBuffer()
      if (res.status === 200) return
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`${url} not ready in ${timeoutMs} ms`)
    await sleep(10)
  }
}

function freePort (): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0))
    })
  })
}

/** curl to /dev/null: seconds and bytes (errors on stderr unless `quiet`, e.g. an expected --max-time). */
function curl (url: string, extra: string[] = [], quiet = false): Promise<{ seconds: number, bytes: number, code: number }> {
  return new Promise((resolve) => {
    const c = spawn('curl', ['-sS', '-o', '/dev/null', '-w', '%{time_total} %{size_download} %{http_code}', ...extra, url], { stdio: ['ignore', 'pipe', quiet ? 'ignore' : 'inherit'] })
    let out = ''
    c.stdout.on('data', (d: Buffer) => { out += d.toString() })
    // 'close', not 'exit': curl may have exited before its last output was read.
    c.on('close', () => {
      const [s, b, code] = out.trim().split(' ').map(Number)
      resolve({ seconds: s ?? NaN, bytes: b ?? 0, code: code ?? 0 })
    })
  })
}

interface Server { readonly name: string, readonly url: string, readonly pid: number, stop: () => Promise<void>, readonly proc: ChildProcess }

function stopProc (p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => { p.once('exit', () => resolve()); p.kill('SIGTERM'); setTimeout(() => p.kill('SIGKILL'), 5000).unref() })
}

/** The node binary pkg-serve runs on: Node 24 (the image's runtime) through npx, or this one. */
function serverNode (): { path: string, version: string } {
  if (NODE_WANTED !== 'current') {
    const found = spawnSync('npx', ['-y', `node@${NODE_WANTED}`, '-p', 'process.execPath + " " + process.version'], { encoding: 'utf8' })
    const [path, version] = found.stdout.trim().split('\n').pop()?.split(' ') ?? []
    if (found.status === 0 && path !== undefined && version !== undefined) return { path, version }
    log(`npx -y node@${NODE_WANTED} failed: pkg-serve runs on this Node (${process.version})`)
  }
  return { path: process.execPath, version: process.version }
}
const SERVER_NODE = serverNode()

async function startPkgServe (env: Record<string, string>, extra: string[] = []): Promise<Server & { readyMs: number }> {
  const port = await freePort()
  const started = Date.now()
  const proc = spawn(SERVER_NODE.path, [join(REPO, 'dist/cli.js'), 'serve', '--port', String(port), '--host', '127.0.0.1', '--log-level', 'warn', ...extra], { env: { ...process.env, NODE_OPTIONS: '', ...IMAGE_ENV, ...env }, stdio: ['ignore', 2, 'inherit'] })
  const url = `http://127.0.0.1:${port}`
  const stop = tracked(() => stopProc(proc))
  await waitFor(`${url}/readyz`)
  return { name: 'pkg-serve', url, pid: proc.pid ?? 0, proc, stop, readyMs: Date.now() - started }
}

async function startRclone (blobEndpoint: string): Promise<Server | undefined> {
  if (spawnSync('sh', ['-c', 'command -v rclone']).status !== 0) return undefined
  const port = await freePort()
  const proc = spawn('rclone', ['serve', 'http', 'az:pkg', '--addr', `127.0.0.1:${port}`, '--read-only', '--no-modtime'], {
    // Go reads its trusted certificates from SSL_CERT_FILE.
    env: { ...process.env, ...(CERT !== undefined && { SSL_CERT_FILE: CERT.certFile }), RCLONE_CONFIG_AZ_TYPE: 'azureblob', RCLONE_CONFIG_AZ_ACCOUNT: AZURITE_ACCOUNT, RCLONE_CONFIG_AZ_KEY: AZURITE_KEY, RCLONE_CONFIG_AZ_ENDPOINT: blobEndpoint, RCLONE_CONFIG_AZ_USE_EMULATOR: 'true' },
    stdio: ['ignore', 'ignore', 'ignore']
  })
  const url = `http://127.0.0.1:${port}`
  const stop = tracked(() => stopProc(proc))
  await waitFor(`${url}/`) // the container's listing
  return { name: 'rclone', url, pid: proc.pid ?? 0, proc, stop }
}

/** N keep-alive connections hammering a URL (connection i asks for urlOf(i)) for `seconds`: requests/s, p99 latency, errors. */
async function load (urlOf: (connection: number) => string, connections: number, seconds: number): Promise<{ rps: number, p99ms: number, errors: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: connections })
  const latencies: number[] = []
  let errors = 0
  const until = Date.now() + seconds * 1000
  const one = (url: string): Promise<void> => new Promise((resolve) => {
    const t0 = performance.now()
    const req = request(url, { agent }, (res) => {
      res.on('data', () => {})
      res.on('end', () => {
        if (res.statusCode === 200) latencies.push(performance.now() - t0)
        else errors++
        resolve()
      })
    })
    req.on('error', () => { errors++; resolve() })
    req.end()
  })
  const started = Date.now()
  await Promise.all(Array.from({ length: connections }, async (_, i) => {
    const url = urlOf(i)
    while (Date.now() < until) await one(url)
  }))
  const elapsed = (Date.now() - started) / 1000
  agent.destroy()
  latencies.sort((a, b) => a - b)
  return { rps: latencies.length / elapsed, p99ms: latencies[Math.floor(latencies.length * 0.99)] ?? NaN, errors }
}

/** A TCP proxy that counts requests and bytes from storage, for the idle-poll cost. */
async function countingProxy (targetPort: number): Promise<{ port: number, requests: () => number, bytesIn: () => number, close: () => void }> {
  let requests = 0
  let bytesIn = 0
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    const up = connect(targetPort, '127.0.0.1')
    sockets.add(client).add(up)
    client.on('data', (d: Buffer) => { requests += (d.toString('latin1').match(/^(GET|HEAD|PUT) /gm) ?? []).length; up.write(d) })
    up.on('data', (d: Buffer) => { bytesIn += d.length; client.write(d) })
    const end = (): void => { client.destroy(); up.destroy() }
    client.on('close', end).on('error', end)
    up.on('close', end).on('error', end)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const a = server.address()
  return { port: typeof a === 'object' && a !== null ? a.port : 0, requests: () => requests, bytesIn: () => bytesIn, close: () => { for (const s of sockets) s.destroy(); server.close() } }
}

/** Writes large.bin (cfg.large bytes); returns its sha256. */
async function seedLarge (container: ContainerClient): Promise<string> {
  const chunk = randomBytes(8 * MiB)
  const block = container.getBlockBlobClient('large.bin')
  const ids: string[] = []
  const hash = createHash('sha256')
  for (let i = 0; i < cfg.large / chunk.length; i++) {
    const id = Buffer.from(String(i).padStart(8, '0')).toString('base64')
    await block.stageBlock(id, chunk, chunk.length)
    hash.update(chunk)
    ids.push(id)
  }
  await block.commitBlockList(ids)
  return hash.digest('hex')
}

type LargeFigures = Record<string, { mbps: number[], cpuPerGiB: number[] }>

/** Large download: throughput and server CPU per GiB, alternating the paths each rep. */
async function largeCase (servers: Server[], paths: Paths, directUrl: string, directExtra: string[] = []): Promise<LargeFigures> {
  const large: LargeFigures = { azurite: { mbps: [], cpuPerGiB: [] } }
  for (const s of servers) large[s.name] = { mbps: [], cpuPerGiB: [] }
  for (let rep = 0; rep < cfg.reps; rep++) {
    const order = rep % 2 === 0 ? ['azurite', ...servers.map((s) => s.name)] : [...servers.map((s) => s.name).reverse(), 'azurite']
    for (const name of order) {
      const server = servers.find((s) => s.name === name)
      const cpu0 = server !== undefined ? cpuSeconds(server.pid) : 0
      const r = server !== undefined ? await curl(paths[name]?.('large.bin', 'large') ?? '') : await curl(directUrl, directExtra)
      if (r.bytes !== cfg.large) throw new Error(`${name}: downloaded ${r.bytes} of ${cfg.large} bytes (HTTP ${r.code})`)
      large[name]?.mbps.push(r.bytes / 1e6 / r.seconds)
      if (server !== undefined) large[name]?.cpuPerGiB.push((cpuSeconds(server.pid) - cpu0) / (r.bytes / GiB))
    }
    log(`large rep ${rep + 1}/${cfg.reps} done`)
  }
  return large
}

/**
 * The large download again with Azurite keeping blobs on disk (its default, slower than in
 * memory): the storage the performance issue's baseline figures were measured against.
 */
async function largeOnDisk (): Promise<LargeFigures> {
  const location = await mkdtemp(join(tmpdir(), 'pkg-serve-bench-azurite-'))
  const azurite = await azuriteTracked({ location })
  try {
    const { container } = await containerOf(azurite)
    await seedLarge(container)
    await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from("[large.latest]\npath = 'large.bin'\n"))
    const { servers, paths, direct } = await startServers(azurite)
    try {
      return await largeCase(servers, paths, direct('large.bin'))
    } finally {
      for (const s of servers) await s.stop()
    }
  } finally {
    await azurite.stop()
    await rm(location, { recursive: true, force: true })
  }
}

/** Azurite's container "pkg" (created). */
async function containerOf (azurite: AzuriteProcess): Promise<{ service: BlobServiceClient, container: ContainerClient }> {
  const service = BlobServiceClient.fromConnectionString(azurite.connectionString)
  const container = service.getContainerClient('pkg')
  await container.createIfNotExists()
  return { service, container }
}

type Paths = Record<string, (blob: string, name: string) => string>

/** pkg-serve and (when installed) rclone on Azurite's container; the URL of each path to a package. */
async function startServers (azurite: AzuriteProcess): Promise<{ servers: Server[], paths: Paths, direct: (blob: string) => string }> {
  const { service } = await containerOf(azurite)
  const sas = service.generateAccountSasUrl(new Date(Date.now() + 6 * 3600_000), AccountSASPermissions.parse('r'), 'sco')
  const pkg = await startPkgServe({ AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString })
  const rclone = await startRclone(azurite.blobEndpoint)
  return {
    servers: [pkg, ...(rclone !== undefined ? [rclone] : [])],
    paths: {
      'pkg-serve': (_blob, name) => `${pkg.url}/pkg/${name}/latest`,
      rclone: (blob) => `${rclone?.url ?? ''}/${blob}`
    },
    direct: (blob) => `${azurite.blobEndpoint}/pkg/${blob}?${new URL(sas).search.slice(1)}`
  }
}

/** The test certificate storage serves over TLS (its own CA), trusted by the bench through NODE_EXTRA_CA_CERTS. */
interface Cert { readonly certFile: string, readonly keyFile: string }
const CERT: Cert | undefined = process.env.PKG_SERVE_BENCH_CERT_DIR !== undefined
  ? { certFile: join(process.env.PKG_SERVE_BENCH_CERT_DIR, 'cert.pem'), keyFile: join(process.env.PKG_SERVE_BENCH_CERT_DIR, 'key.pem') }
  : undefined

type SmallFigures = Record<string, { rps: number[], p99ms: number[], errors: number, cpuMsPerReq: { server: number[], storage: number[], client: number[] } }>
const m = (xs: number[] | undefined): number => median(xs ?? [])
const summarize = (figures: SmallFigures): Record<string, { rps: number, p99ms: number, errors: number, cpuMsPerRequest: { server: number, storage: number, client: number } }> =>
  Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, {
    rps: m(v.rps),
    p99ms: m(v.p99ms),
    errors: v.errors,
    cpuMsPerRequest: { server: m(v.cpuMsPerReq.server), storage: m(v.cpuMsPerReq.storage), client: m(v.cpuMsPerReq.client) }
  }]))
const summarizeLarge = (figures: LargeFigures): { sizeMiB: number, reps: number, throughputMBps: Record<string, number>, serverCpuSecondsPerGiB: Record<string, number>, samples: LargeFigures } => ({
  sizeMiB: cfg.large / MiB,
  reps: cfg.reps,
  throughputMBps: Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, m(v.mbps)])),
  serverCpuSecondsPerGiB: Object.fromEntries(Object.entries(figures).filter(([k]) => k !== 'azurite').map(([k, v]) => [k, m(v.cpuPerGiB)])),
  samples: figures
})

const DISTINCT = 32
const distinctName = (i: number): string => `small${String(i).padStart(2, '0')}`
const MANIFEST = "[large.latest]\npath = 'large.bin'\n[mem.latest]\npath = 'mem.bin'\n[small.latest]\npath = 'small.bin'\n" +
  Array.from({ length: DISTINCT }, (_, i) => `[${distinctName(i)}.latest]\npath = '${distinctName(i)}.bin'\n`).join('')

/** Large, memory and small cases against one Azurite (over TLS when `tls`), pkg-serve and rclone. */
async function setting (tls: boolean): Promise<{ results: ReturnType<typeof settingResults>, azurite: AzuriteProcess, container: ContainerClient, largeSha256: string, stopServers: () => Promise<void> }> {
  const azurite = await azuriteTracked(tls && CERT !== undefined ? { tls: { cert: CERT.certFile, key: CERT.keyFile } } : {})
  const { container } = await containerOf(azurite)
  log(`${tls ? 'TLS' : 'plain HTTP'}: seeding Azurite`)
  const largeSha256 = await seedLarge(container)
  await container.getBlockBlobClient('mem.bin').uploadData(randomBytes(cfg.memEach))
  await container.getBlockBlobClient('small.bin').uploadData(randomBytes(1024))
  // One small package per connection too: requests that cannot share a storage read.
  for (let i = 0; i < DISTINCT; i++) await container.getBlockBlobClient(`${distinctName(i)}.bin`).uploadData(randomBytes(1024))
  await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from(MANIFEST))
  const { servers, paths, direct } = await startServers(azurite)
  if (servers.length === 1) log('rclone is not installed: its baselines are skipped (apt-get install rclone)')
  // Resident size before any download and again before the memory case: the peak is the fixed
  // size (runtime, modules, what earlier downloads left) plus what the concurrent downloads hold.
  await sleep(1000)
  const rssAtStart = Object.fromEntries(servers.map((s) => [s.name, rssMiB(s.pid)]))

  const large = await largeCase(servers, paths, direct('large.bin'), CERT !== undefined && tls ? ['--cacert', CERT.certFile] : [])

  // Memory: 8 concurrent downloads plus one client reading at 64 KiB/s.
  const memory: Record<string, number> = {}
  const rssBefore: Record<string, number> = {}
  for (const s of servers) {
    rssBefore[s.name] = rssMiB(s.pid)
    const peak = rssPeak(s.pid)
    const slow = curl(paths[s.name]?.('mem.bin', 'mem') ?? '', ['--limit-rate', '64K', '--max-time', '8'], true)
    const fast = await Promise.all(Array.from({ length: 8 }, async () => curl(paths[s.name]?.('mem.bin', 'mem') ?? '')))
    await slow
    memory[s.name] = peak()
    if (fast.some((r) => r.bytes !== cfg.memEach)) throw new Error(`${s.name}: a concurrent download was short`)
  }
  log('memory case done')

  // Small packages: 1 KiB at 32 connections, all asking for one package (the target), then each
  // connection for its own (no two requests can share a storage read: the storage-bound figure).
  // CPU per request of the server, of storage (Azurite) and of the client: who the limit is.
  const smallCase = async (urlFor: (server: string, connection: number) => string): Promise<SmallFigures> => {
    const figures: SmallFigures = {}
    for (const s of servers) figures[s.name] = { rps: [], p99ms: [], errors: 0, cpuMsPerReq: { server: [], storage: [], client: [] } }
    for (let rep = 0; rep < Math.max(2, Math.ceil(cfg.reps / 2)); rep++) {
      for (const s of rep % 2 === 0 ? servers : [...servers].reverse()) {
        const cpu0 = { server: cpuSeconds(s.pid), storage: cpuSeconds(azurite.pid), client: process.cpuUsage() }
        const r = await load((i) => urlFor(s.name, i), 32, cfg.smallSeconds)
        const entry = figures[s.name]
        if (entry === undefined) continue
        const requests = r.rps * cfg.smallSeconds
        const client = process.cpuUsage(cpu0.client)
        entry.cpuMsPerReq.server.push((cpuSeconds(s.pid) - cpu0.server) * 1000 / requests)
        entry.cpuMsPerReq.storage.push((cpuSeconds(azurite.pid) - cpu0.storage) * 1000 / requests)
        entry.cpuMsPerReq.client.push((client.user + client.system) / 1000 / requests)
        entry.rps.push(r.rps)
        entry.p99ms.push(r.p99ms)
        entry.errors += r.errors
      }
    }
    return figures
  }
  const small = await smallCase((server) => paths[server]?.('small.bin', 'small') ?? '')
  const smallDistinct = await smallCase((server, i) => paths[server]?.(`${distinctName(i % DISTINCT)}.bin`, distinctName(i % DISTINCT)) ?? '')
  log('small case done')
  return {
    results: settingResults(tls, large, { peak: memory, atStart: rssAtStart, beforeCase: rssBefore }, small, smallDistinct),
    azurite,
    container,
    largeSha256,
    stopServers: async () => { for (const s of servers) await s.stop() }
  }
}

interface RssFigures { readonly peak: Record<string, number>, readonly atStart: Record<string, number>, readonly beforeCase: Record<string, number> }

function settingResults (tls: boolean, large: LargeFigures, rss: RssFigures, small: SmallFigures, smallDistinct: SmallFigures) {
  const pkg = 'pkg-serve'
  const ratio = (a: number, b: number): number | null => Number.isNaN(b) ? null : a / b
  const memory = rss.peak
  const growth = Object.fromEntries(Object.entries(memory).map(([k, v]) => [k, v - (rss.beforeCase[k] ?? NaN)]))
  return {
    storage: tls ? 'https (TLS 1.3)' : 'http',
    large: summarizeLarge(large),
    memoryPeakRssMiB: memory,
    rssAtStartMiB: rss.atStart,
    rssBeforeMemoryCaseMiB: rss.beforeCase,
    memoryGrowthMiB: growth,
    small: summarize(small),
    smallDistinct: summarize(smallDistinct),
    ratios: {
      throughputVsAzurite: m(large[pkg]?.mbps) / m(large.azurite?.mbps),
      cpuVsRclone: ratio(m(large[pkg]?.cpuPerGiB), m(large.rclone?.cpuPerGiB)),
      rssVsRclone: ratio(memory[pkg] ?? NaN, memory.rclone ?? NaN),
      rssGrowthVsRclone: ratio(growth[pkg] ?? NaN, growth.rclone ?? NaN),
      smallRpsVsRclone: ratio(m(small[pkg]?.rps), m(small.rclone?.rps)),
      smallDistinctRpsVsRclone: ratio(m(smallDistinct[pkg]?.rps), m(smallDistinct.rclone?.rps))
    }
  }
}

/** Downloads a package with curl, hashing what arrives: MB/s and the sha256 of the bytes. */
function curlHash (url: string): Promise<{ mbps: number, bytes: number, sha256: string }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256')
    let bytes = 0
    const started = performance.now()
    const c = spawn('curl', ['-sS', '-f', url], { stdio: ['ignore', 'pipe', 'inherit'] })
    c.stdout.on('data', (d: Buffer) => { bytes += d.length; hash.update(d) })
    c.on('close', (code) => {
      if (code !== 0) { reject(new Error(`curl ${url} exited ${code ?? ''}`)); return }
      resolve({ mbps: bytes / 1e6 / ((performance.now() - started) / 1000), bytes, sha256: hash.digest('hex') })
    })
  })
}

/**
 * Large packages at the speed of the storage account (issue 16): storage behind a relay that
 * lets each connection carry at most R bytes/s, as Azure does; throughput against the number of
 * connections and against R; peak RSS of 8 downloads plus a slow reader with and without
 * parallel reads; CPU per GiB over TLS without the relay, parallel against one read.
 */
async function parallelCase (azurite: AzuriteProcess, largeSha256: string): Promise<Record<string, unknown>> {
  const R = 24e6
  const viaRelay = async (bytesPerSecond: number) => {
    const relay = await startThrottleRelay(azurite.port, bytesPerSecond)
    const endpoint = `${azurite.blobEndpoint.startsWith('https') ? 'https' : 'http'}://127.0.0.1:${relay.port}/${AZURITE_ACCOUNT}`
    return { relay, env: { AZURE_STORAGE_CONNECTION_STRING: connectionStringFor(endpoint) } }
  }
  const download = async (env: Record<string, string>, flags: string[]) => {
    const s = await startPkgServe(env, flags)
    try {
      const r = await curlHash(`${s.url}/pkg/large/latest`)
      if (r.bytes !== cfg.large || r.sha256 !== largeSha256) throw new Error(`parallel reads ${flags.join(' ')}: ${r.bytes} bytes, sha256 ${r.sha256}`)
      return r.mbps
    } finally {
      await s.stop()
    }
  }
  const limited = await viaRelay(R)
  // The defaults (no flags) first: the figure the target is about.
  const atDefault = await download(limited.env, [])
  log(`parallel reads: defaults at R = ${R / 1e6} MB/s: ${atDefault.toFixed(0)} MB/s`)
  const byConnections: Record<string, number> = {}
  for (const n of QUICK ? [1] : [1, 2, 4, 6, 8]) {
    // The budget is no limit here: the curve is about connections.
    byConnections[n] = await download(limited.env, ['--read-connections', String(n), '--read-ahead', String(READ_DEFAULTS.readChunk * (n + 1))])
    log(`parallel reads: ${n} connection(s) at R = ${R / 1e6} MB/s: ${byConnections[n]?.toFixed(0) ?? ''} MB/s`)
  }
  const byRate: Record<string, number> = { [R / 1e6]: atDefault }
  for (const rate of QUICK ? [] : [12e6, 48e6, 96e6]) {
    const other = await viaRelay(rate)
    byRate[rate / 1e6] = await download(other.env, [])
    await other.relay.close()
    log(`parallel reads: defaults at R = ${rate / 1e6} MB/s: ${byRate[rate / 1e6]?.toFixed(0) ?? ''} MB/s`)
  }

  // Memory: 8 downloads through the limited storage plus one reader at 64 KiB/s.
  const memory: Record<string, number> = {}
  for (const [label, flags] of [['parallel', []], ['one read', ['--read-connections', '1']]] as const) {
    const s = await startPkgServe(limited.env, [...flags])
    const peak = rssPeak(s.pid)
    const slow = curl(`${s.url}/pkg/mem/latest`, ['--limit-rate', '64K', '--max-time', '8'], true)
    const fast = await Promise.all(Array.from({ length: 8 }, async () => curl(`${s.url}/pkg/mem/latest`)))
    await slow
    memory[label] = peak()
    await s.stop()
    const short = fast.find((r) => r.bytes !== cfg.memEach)
    if (short !== undefined) throw new Error(`${label}: a concurrent download was short: ${short.bytes} bytes, HTTP ${short.code}`)
  }
  await limited.relay.close()

  // CPU per GiB over TLS straight from storage, alternating: the defaults (whose speed test
  // finds that parallel reads do not pay here) against one read; and, to show what the speed test
  // saves, parallel reads kept on regardless (--read-min-speedup 0).
  const cpu: Record<string, number[]> = { parallel: [], 'one read': [], 'parallel, kept on': [] }
  const cpuPaths: Array<[string, string[]]> = [['parallel', []], ['one read', ['--read-connections', '1']], ['parallel, kept on', ['--read-min-speedup', '0']]]
  const direct = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString }
  for (let rep = 0; rep < cfg.reps; rep++) {
    for (const [label, flags] of rep % 2 === 0 ? cpuPaths : [...cpuPaths].reverse()) {
      const s = await startPkgServe(direct, flags)
      const cpu0 = cpuSeconds(s.pid)
      const r = await curl(`${s.url}/pkg/large/latest`)
      if (r.bytes !== cfg.large) throw new Error(`${label}: ${r.bytes} bytes`)
      cpu[label]?.push((cpuSeconds(s.pid) - cpu0) / (r.bytes / GiB))
      await s.stop()
    }
  }
  return {
    perConnectionMBps: R / 1e6,
    sizeMiB: cfg.large / MiB,
    throughputByConnectionsMBps: byConnections,
    throughputByRateMBps: byRate,
    speedupAtDefault: atDefault / (R / 1e6),
    memoryPeakRssMiB: memory,
    memoryDeltaMiB: (memory.parallel ?? NaN) - (memory['one read'] ?? NaN),
    cpuSecondsPerGiB: { parallel: m(cpu.parallel), oneRead: m(cpu['one read']), keptOn: m(cpu['parallel, kept on']) },
    cpuRatio: m(cpu.parallel) / m(cpu['one read']),
    cpuRatioKeptOn: m(cpu['parallel, kept on']) / m(cpu['one read'])
  }
}

async function main (): Promise<void> {
  log(`${QUICK ? 'quick' : 'full'} run: large blob ${cfg.large / MiB} MiB × ${cfg.reps} reps; pkg-serve on Node ${SERVER_NODE.version} with ${IMAGE_ENV_TEXT}`)
  const build = spawnSync('npm', ['run', '--silent', 'build'], { cwd: REPO, stdio: 'inherit' })
  if (build.status !== 0) throw new Error('npm run build failed')
  if (ONLY === 'parallel') { await onlyParallel(); return }
  if (ONLY !== undefined) throw new Error(`--only=${ONLY}: the only case that runs alone is "parallel"`)

  // Over TLS first: the production setting.
  const secure = await setting(true)
  const env = { AZURE_STORAGE_CONNECTION_STRING: secure.azurite.connectionString }
  // Start to ready, and manifest reload latency (poll interval 1 s).
  const startMs: number[] = []
  for (let i = 0; i < cfg.startReps; i++) {
    const s = await startPkgServe(env)
    startMs.push(s.readyMs)
    await s.stop()
  }
  const reloadMs: number[] = []
  const polling = await startPkgServe(env, ['--poll-interval', '1'])
  for (let i = 0; i < cfg.reloadReps; i++) {
    await sleep(Math.random() * 1000)
    const name = `fresh${i}`
    await secure.container.getBlockBlobClient('packages.toml').uploadData(Buffer.from(`${MANIFEST}[${name}.latest]\npath = 'small.bin'\n`))
    const t0 = Date.now()
    while ((await fetch(`${polling.url}/pkg/${name}/latest`).then(async (r) => { await r.arrayBuffer(); return r.status })) !== 200) await sleep(5)
    reloadMs.push(Date.now() - t0)
  }
  await polling.stop()
  await secure.stopServers()
  log('parallel reads of a large package, storage limited per connection (TLS)')
  const parallel = await parallelCase(secure.azurite, secure.largeSha256)
  await secure.azurite.stop()

  const plain = await setting(false)
  // The cost of an idle poll, counted on the wire (plain HTTP: the proxy reads the requests).
  const proxy = await countingProxy(plain.azurite.port)
  const idle = await startPkgServe({ AZURE_STORAGE_CONNECTION_STRING: connectionStringFor(`http://127.0.0.1:${proxy.port}/${AZURITE_ACCOUNT}`) }, ['--poll-interval', '0.25'])
  await sleep(300)
  const req0 = proxy.requests()
  const bytes0 = proxy.bytesIn()
  const polls0 = await pollCount(idle.url)
  await sleep(3000)
  const polls = (await pollCount(idle.url)) - polls0
  const idlePoll = { polls, requestsPerPoll: (proxy.requests() - req0) / polls, bytesFromStoragePerPoll: (proxy.bytesIn() - bytes0) / polls, manifestBytes: Buffer.byteLength(MANIFEST) + 60 }
  await idle.stop()
  proxy.close()
  await plain.stopServers()
  await plain.azurite.stop()
  log('large download against Azurite on disk (plain HTTP)')
  const largeDisk = summarizeLarge(await largeOnDisk())

  const results = {
    quick: QUICK,
    machine: { cpus: spawnSync('nproc', { encoding: 'utf8' }).stdout.trim(), benchNode: process.version, serverNode: SERVER_NODE.version, serverEnv: IMAGE_ENV },
    tls: secure.results,
    plain: plain.results,
    largeAzuriteOnDisk: largeDisk,
    parallelReads: parallel,
    startToReadyMs: m(startMs),
    manifestReloadMs: { median: m(reloadMs), pollIntervalSeconds: 1, samples: reloadMs },
    idlePoll
  }
  await mkdir(join(REPO, 'bench/results'), { recursive: true })
  await writeFile(join(REPO, 'bench/results/latest.json'), `${JSON.stringify(results, null, 2)}\n`)

  const f = (x: number | null | undefined, d = 2): string => x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(d)
  const row = (cells: string[]): string => `| ${cells.join(' | ')} |`
  const table = (r: typeof secure.results): string[] => {
    const names = Object.keys(r.memoryPeakRssMiB)
    return [
      `storage over ${r.storage}:`,
      '',
      row(['path', 'throughput MB/s', 'server CPU-s/GiB', 'peak RSS MiB (8×+slow)', 'small req/s (one pkg)', 'small p99 ms', 'small req/s (own pkgs)', 'errors']),
      row(['---', '---', '---', '---', '---', '---', '---', '---']),
      row(['curl ← Azurite', f(r.large.throughputMBps.azurite, 0), '—', '—', '—', '—', '—', '—']),
      ...names.map((n) => row([n, f(r.large.throughputMBps[n], 0), f(r.large.serverCpuSecondsPerGiB[n]), f(r.memoryPeakRssMiB[n], 0), f(r.small[n]?.rps, 0), f(r.small[n]?.p99ms, 1), f(r.smallDistinct[n]?.rps, 0), String((r.small[n]?.errors ?? 0) + (r.smallDistinct[n]?.errors ?? 0))])),
      '',
      `ratios vs rclone: CPU/GiB ${f(r.ratios.cpuVsRclone)}× (target ≤ 0.5 over TLS), peak RSS ${f(r.ratios.rssVsRclone)}× (≤ 0.6), small one package ${f(r.ratios.smallRpsVsRclone)}× (≥ 3), own packages ${f(r.ratios.smallDistinctRpsVsRclone)}× (≥ 1.2); throughput ${f(r.ratios.throughputVsAzurite)}× curl ← Azurite`,
      `resident MiB: ${names.map((n) => `${n} ${f(r.rssAtStartMiB[n], 0)} at start, ${f(r.rssBeforeMemoryCaseMiB[n], 0)} after the large downloads, ${f(r.memoryPeakRssMiB[n], 0)} at the memory case's peak (+${f(r.memoryGrowthMiB[n], 0)})`).join('; ')}; growth ${f(r.ratios.rssGrowthVsRclone)}× rclone's`,
      ...(['small', 'smallDistinct'] as const).flatMap((which) => names.map((n) => {
        const c = r[which][n]?.cpuMsPerRequest
        return `${which === 'small' ? 'one package' : 'own packages'} via ${n}: CPU ms per request: server ${f(c?.server, 3)}, storage ${f(c?.storage, 3)}, client ${f(c?.client, 3)}`
      })),
      ''
    ]
  }
  const lines = [
    '',
    `pkg-serve bench (${QUICK ? 'quick' : 'full'}; pkg-serve on Node ${SERVER_NODE.version}, ${IMAGE_ENV_TEXT}; large ${cfg.large / MiB} MiB × ${cfg.reps}, medians)`,
    '',
    ...table(secure.results),
    ...table(plain.results),
    `parallel reads (storage over TLS, each connection limited to ${f(Number(parallel.perConnectionMBps), 0)} MB/s, ${f(Number(parallel.sizeMiB), 0)} MiB): by connections ${JSON.stringify(parallel.throughputByConnectionsMBps)} MB/s; by R ${JSON.stringify(parallel.throughputByRateMBps)} MB/s; default ${f(Number(parallel.speedupAtDefault))}× R (target ≥ 3); peak RSS 8×+slow ${JSON.stringify(parallel.memoryPeakRssMiB)} MiB, +${f(Number(parallel.memoryDeltaMiB), 0)} MiB (≤ 32); CPU/GiB without the relay ${f(Number(parallel.cpuRatio))}× one read (≤ 1.1; kept on regardless ${f(Number(parallel.cpuRatioKeptOn))}×)`,
    `Azurite on disk (plain HTTP): pkg-serve ${f(largeDisk.throughputMBps['pkg-serve'], 0)} MB/s vs curl ← Azurite ${f(largeDisk.throughputMBps.azurite, 0)} (rclone ${f(largeDisk.throughputMBps.rclone, 0)})`,
    `start → /readyz 200 (TLS): ${f(results.startToReadyMs, 0)} ms; manifest reload (1 s poll): ${f(results.manifestReloadMs.median, 0)} ms median`,
    `idle poll: ${f(idlePoll.requestsPerPoll)} requests and ${f(idlePoll.bytesFromStoragePerPoll, 0)} bytes from storage per poll (the manifest is ~${idlePoll.manifestBytes} bytes)`,
    '',
    'figures: bench/results/latest.json'
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
}

/** `--only=parallel`: the parallel-reads case alone, against TLS storage seeded for it. */
async function onlyParallel (): Promise<void> {
  const azurite = await azuriteTracked(CERT !== undefined ? { tls: { cert: CERT.certFile, key: CERT.keyFile } } : {})
  try {
    const { container } = await containerOf(azurite)
    const largeSha256 = await seedLarge(container)
    await container.getBlockBlobClient('mem.bin').uploadData(randomBytes(cfg.memEach))
    await container.getBlockBlobClient('packages.toml').uploadData(Buffer.from(MANIFEST))
    const parallel = await parallelCase(azurite, largeSha256)
    process.stdout.write(`${JSON.stringify(parallel, null, 2)}\n`)
  } finally {
    await azurite.stop()
  }
}

/**
 * Node reads NODE_EXTRA_CA_CERTS only at start-up: the bench makes its certificate, then runs
 * itself again with it trusted (pkg-serve, started from there, inherits the trust).
 */
async function withCertificate (): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'pkg-serve-bench-tls-'))
  try {
    const made = spawnSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2', '-subj', '/CN=pkg-serve bench storage',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-addext', 'basicConstraints=critical,CA:TRUE'
    ], { stdio: 'ignore' })
    if (made.status !== 0) throw new Error('openssl could not make the test certificate')
    child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
      stdio: 'inherit',
      env: { ...process.env, PKG_SERVE_BENCH_CERT_DIR: dir, NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') }
    })
    const [code] = await once(child, 'exit') as [number | null]
    process.exitCode = code ?? 1
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

async function pollCount (url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  return [...text.matchAll(/pkg_serve_manifest_reloads_total\{result="(?:unchanged|loaded)"\} (\d+)/g)].reduce((n, x) => n + Number(x[1]), 0)
}

/** A failure anywhere ends the bench (a relay or proxy may still listen): what it started goes first. */
const fail = (err: unknown): void => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  shutdown().catch(() => {})
}
(CERT === undefined ? withCertificate() : main()).catch(fail)
process.on('uncaughtException', fail).on('unhandledRejection', fail)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  // The outer run (withCertificate) passes the signal on to the inner one, which stops what it
  // started. A second signal (Ctrl-C reaches the whole group, and is passed on too) changes nothing.
  process.on(signal, () => { if (child !== undefined) child.kill(signal); else shutdown().catch(() => {}) })
}
