// What docker/Dockerfile gives node in the image: its ENV lines (V8's and glibc's memory
// settings) and the V8 flags its ENTRYPOINT passes (those NODE_OPTIONS does not take), for what
// runs pkg-serve outside the image but should run it as the image does: the bench, and the tests
// that measure its memory.

import { readFileSync } from 'node:fs'

const dockerfile = readFileSync(new URL('../docker/Dockerfile', import.meta.url), 'utf8')

export const IMAGE_ENV: Readonly<Record<string, string>> = Object.fromEntries(
  [...dockerfile.matchAll(/^ENV (\w+)="?([^"\n]*)"?$/gm)].map((m) => [m[1] ?? '', m[2] ?? '']))

/** The flags between `node` and the script in the ENTRYPOINT (exec form). */
export const IMAGE_NODE_ARGS: readonly string[] = ((): string[] => {
  const json = /^ENTRYPOINT (\[.*\])\s*$/m.exec(dockerfile)?.[1]
  const argv: unknown = json === undefined ? undefined : JSON.parse(json)
  if (!Array.isArray(argv) || !argv.every((a) => typeof a === 'string') || !argv.includes('node')) {
    throw new Error('docker/Dockerfile: no ENTRYPOINT in exec form that runs node')
  }
  const rest = argv.slice(argv.indexOf('node') + 1)
  const script = rest.findIndex((a) => !a.startsWith('-'))
  return script < 0 ? rest : rest.slice(0, script)
})()
