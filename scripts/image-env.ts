// The environment docker/Dockerfile gives the image (its ENV lines: V8's and glibc's memory
// settings), for what runs pkg-serve outside the image but should run it as the image does: the
// bench, and the tests that measure its memory.

import { readFileSync } from 'node:fs'

export const IMAGE_ENV: Readonly<Record<string, string>> = Object.fromEntries(
  [...readFileSync(new URL('../docker/Dockerfile', import.meta.url), 'utf8').matchAll(/^ENV (\w+)="?([^"\n]*)"?$/gm)]
    .map((m) => [m[1] ?? '', m[2] ?? '']))
