// Runs a TypeScript entry point: as is on Node with type stripping (22.18+, 24), through tsx on
// Node 20. Signals reach the child; its exit code is ours.

import { spawn } from 'node:child_process'

const loader = process.features.typescript ? [] : ['--import', 'tsx']
const child = spawn(process.execPath, [...loader, ...process.argv.slice(2)], { stdio: 'inherit' })
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal))
child.on('exit', (code, signal) => { process.exitCode = code ?? (signal !== null ? 1 : 0) })
