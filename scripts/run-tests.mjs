// Runs every test/**/*.test.ts with node:test. Node with built-in type stripping (22.18+, 24)
// runs the TypeScript as is; older Node (20) loads it through tsx.
// Extra arguments are passed to node (e.g. --test-name-pattern).

import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'

function find (dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name)
    if (e.isDirectory()) return find(p)
    return e.name.endsWith('.test.ts') ? [p] : []
  }).sort()
}

const args = process.argv.slice(2)
const files = args.some((a) => a.endsWith('.ts')) ? args.filter((a) => a.endsWith('.ts')) : find('test')
const flags = args.filter((a) => !a.endsWith('.ts'))
const loader = process.features.typescript ? [] : ['--import', 'tsx']
const child = spawn(process.execPath, [...loader, '--test', '--test-concurrency=2', '--test-timeout=180000', ...flags, ...files], { stdio: 'inherit' })
child.on('exit', (code, signal) => { process.exitCode = code ?? (signal ? 1 : 0) })
