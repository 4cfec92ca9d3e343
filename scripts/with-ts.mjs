// Runs a TypeScript entry point: as is on Node with type stripping (22.18+, 24), through tsx on
// Node 20. Signals reach the child; its exit code is ours. When whoever started us goes away
// (npm killed; npm forwards SIGTERM to its shell, which does not pass it on), the child is stopped too.

import { spawn } from 'node:child_process'

const loader = process.features.typescript ? [] : ['--import', 'tsx']
const child = spawn(process.execPath, [...loader, ...process.argv.slice(2)], { stdio: 'inherit' })
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal))
child.on('exit', (code, signal) => { process.exitCode = code ?? (signal !== null ? 1 : 0) })
const parent = process.ppid
setInterval(() => { if (process.ppid !== parent) child.kill('SIGTERM') }, 1000).unref()
