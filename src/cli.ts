#!/usr/bin/env node
// The pkg-serve executable: runs main() and turns its outcome into the exit code.
// An unexpected error is printed as one line (the stack only with PKG_SERVE_DEBUG=1).

import { main } from './cli/program.ts'

main(process.argv).then((code) => {
  if (code !== 0) process.exitCode = code
}, (err: unknown) => {
  const e = err instanceof Error ? err : new Error(String(err))
  process.stderr.write(`pkg-serve: ${e.message}\n`)
  if (process.env.PKG_SERVE_DEBUG === '1' && e.stack !== undefined) process.stderr.write(`${e.stack}\n`)
  process.exitCode = 1
})
