// The command line: parses argv + PKG_SERVE_* variables with commander, validates them with
// zod (config.ts), and runs a command. Bad input is one line on stderr and a non-zero exit code;
// nothing here calls process.exit.

import { createRequire } from 'node:module'
import { Command, CommanderError, Option } from 'commander'
import { ConfigError, LOG_LEVELS, parseConfig, serveConfigSchema } from './config.ts'
import { CredentialConfigError } from './storage/credentials.ts'
import { StorageSpecError } from './storage/open.ts'
import { serve } from './commands/serve.ts'

type Env = Readonly<Record<string, string | undefined>>

const { version } = createRequire(import.meta.url)('../package.json') as { version: string }

/** An option that also reads PKG_SERVE_<FLAG_IN_CAPS>. */
function flag (flags: string, description: string): Option {
  const long = /--([a-z0-9-]+)/.exec(flags)?.[1] ?? ''
  return new Option(flags, description).env(`PKG_SERVE_${long.replaceAll('-', '_').toUpperCase()}`)
}

function storageOptions (command: Command, env: Env): Command {
  return command
    .addOption(flag('--container <name>', 'blob container holding the packages and the manifest').default('pkg'))
    .addOption(flag('--endpoint-suffix <suffix>', 'blob endpoint suffix for account names (sovereign clouds)').default('core.windows.net'))
    .addOption(flag('--identity-client-id <id>', 'client id of the managed identity to use (default: AZURE_CLIENT_ID, else the kubelet identity)'))
    .addOption(flag('--azure-json <path>', "the node's cloud config, read for the kubelet identity").default('/etc/kubernetes/azure.json'))
    .addOption(flag('--log-level <level>', 'log level').choices(LOG_LEVELS).default(env.LOG_LEVEL ?? 'info'))
}

export class UsageError extends Error {
  override name = 'UsageError'
}

/** Errors whose message is all the user needs (no stack trace). */
export function isUserError (err: unknown): boolean {
  return err instanceof ConfigError || err instanceof StorageSpecError || err instanceof CredentialConfigError || err instanceof UsageError
}

function describeListenError (err: unknown): string | undefined {
  const e = err as NodeJS.ErrnoException & { address?: string, port?: number }
  if (e.syscall !== 'listen') return undefined
  const where = `${e.address ?? ''}:${e.port ?? ''}`
  if (e.code === 'EADDRINUSE') return `cannot listen on ${where}: the port is in use (choose another --port, or 0 for a free one)`
  if (e.code === 'EACCES') return `cannot listen on ${where}: permission denied (ports below 1024 need privileges)`
  if (e.code === 'EADDRNOTAVAIL') return `cannot listen on ${where}: no such local address (check --host)`
  return `cannot listen on ${where}: ${e.message}`
}

export function buildProgram (env: Env, writeErr: (s: string) => void, writeOut: (s: string) => void): Command {
  const program = new Command('pkg-serve')
    .description('Serve private packages from Azure Storage to node scripts over loopback, and run those scripts on every node')
    .version(version, '-V, --version')
    .exitOverride()
    .configureOutput({
      writeOut,
      writeErr,
      outputError: (str, write) => { write(`pkg-serve: ${str.replace(/^error: /, '').trim().replace(/\s*\n\s*/g, ' ')}\n`) }
    })
    .showSuggestionAfterError(true)

  storageOptions(program.command('serve'), env)
    .description('serve packages from STORAGE over HTTP (loopback only by default)')
    .argument('[storage]', 'storage account name, blob endpoint URL, or local directory (env PKG_SERVE_STORAGE)')
    .addOption(flag('--port <port>', 'port to listen on (0 picks a free one)').default('8080'))
    .addOption(flag('--host <host>', 'address to bind; localhost means 127.0.0.1 and ::1').default('localhost'))
    .addOption(flag('--manifest <blob>', 'manifest blob in the container').default('packages.toml'))
    .addOption(flag('--poll-interval <seconds>', 'seconds between manifest checks (0 disables)').default('30'))
    .action(async (storage: string | undefined, options: Record<string, unknown>) => {
      const config = parseConfig(serveConfigSchema, { ...options, storage: storage ?? env.PKG_SERVE_STORAGE })
      await serve(config, env)
    })

  return program
}

/** Runs the command line; resolves when the command has started (servers keep the process alive). */
export async function main (argv: readonly string[], env: Env = process.env): Promise<number> {
  const program = buildProgram(env, (s) => process.stderr.write(s), (s) => process.stdout.write(s))
  if (argv.length <= 2) {
    program.outputHelp({ error: true })
    return 2
  }
  try {
    await program.parseAsync([...argv])
    return 0
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already wrote its one line (or the help/version text).
      return err.exitCode === 0 ? 0 : 2
    }
    const listen = describeListenError(err)
    if (listen !== undefined) {
      process.stderr.write(`pkg-serve: ${listen}\n`)
      return 1
    }
    if (isUserError(err)) {
      process.stderr.write(`pkg-serve: ${(err as Error).message}\n`)
      return 2
    }
    throw err
  }
}
