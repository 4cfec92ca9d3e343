// The command line: parses argv + PKG_SERVE_* variables with commander, validates them with
// zod (config.ts), and runs a command. Bad input is one line on stderr and a non-zero exit code;
// nothing here calls process.exit.

import { createRequire } from 'node:module'
import { Command, CommanderError, Option } from 'commander'
import { LOG_LEVELS, parseBooleanEnv, parseConfig, publishConfigSchema, runConfigSchema, serveConfigSchema, validateConfigSchema } from './config.ts'
import { publish } from './commands/publish.ts'
import { validate } from './commands/validate.ts'
import { run } from './commands/run.ts'
import { serve } from './commands/serve.ts'
import { UserError, errnoCode, isUserError } from '../lib/errors.ts'

type Env = Readonly<Record<string, string | undefined>>

const { version } = createRequire(import.meta.url)('../../package.json') as { version: string }

function envName (flags: string): string {
  const long = /--([a-z0-9-]+)/.exec(flags)?.[1] ?? ''
  return `PKG_SERVE_${long.replaceAll('-', '_').toUpperCase()}`
}

/** An option that also reads PKG_SERVE_<FLAG_IN_CAPS>. */
function flag (flags: string, description: string): Option {
  return new Option(flags, description).env(envName(flags))
}

/**
 * A boolean flag. Its PKG_SERVE_* variable is read by booleanOptions(), because commander would
 * take any value, even "false", as true.
 */
function toggle (flags: string, description: string): Option {
  return new Option(flags, `${description} (env: ${envName(flags)}=true|false)`)
}

/** The boolean options' values: the command line first, else their PKG_SERVE_* variable. */
function booleanOptions (command: Command, env: Env): Record<string, boolean> {
  const out: Record<string, boolean> = {}
  for (const option of command.options) {
    if (!option.isBoolean() || option.long === undefined || option.long === '--help') continue
    const key = option.attributeName()
    const variable = envName(option.long)
    const fromEnv = env[variable]
    let value = (command.getOptionValue(key) as boolean | undefined) ?? false
    if (command.getOptionValueSource(key) !== 'cli' && fromEnv !== undefined) {
      const parsed = parseBooleanEnv(variable, fromEnv)
      value = option.negate ? !parsed : parsed
    }
    out[key] = value
  }
  return out
}

function storageOptions (command: Command, env: Env): Command {
  return command
    .addOption(flag('--container <name>', 'blob container holding the packages and the manifest').default('pkg'))
    .addOption(flag('--endpoint-suffix <suffix>', 'blob endpoint suffix for account names (sovereign clouds)').default('core.windows.net'))
    .addOption(flag('--identity-client-id <id>', 'client id of the managed identity to use (default: AZURE_CLIENT_ID, else the kubelet identity)'))
    .addOption(flag('--azure-json <path>', "the node's cloud config, read for the kubelet identity").default('/etc/kubernetes/azure.json'))
    .addOption(flag('--storage-timeout <seconds>', 'longest wait for a storage answer, or for the next bytes of a download').default('30'))
    .addOption(flag('--log-level <level>', 'log level').choices(LOG_LEVELS).default(env.LOG_LEVEL ?? 'info'))
}

export class UsageError extends UserError {
  override name = 'UsageError'
}

function describeListenError (err: unknown): string | undefined {
  const e = err as { syscall?: string, address?: string, port?: number, message?: string }
  if (e.syscall !== 'listen') return undefined
  const where = `${e.address ?? ''}:${e.port ?? ''}`
  switch (errnoCode(err)) {
    case 'EADDRINUSE': return `cannot listen on ${where}: the port is in use (choose another --port, or 0 for a free one)`
    case 'EACCES': return `cannot listen on ${where}: permission denied (ports below 1024 need privileges)`
    case 'EADDRNOTAVAIL': return `cannot listen on ${where}: no such local address (check --host)`
    default: return `cannot listen on ${where}: ${e.message ?? 'failed'}`
  }
}

export function buildProgram (env: Env, writeErr: (s: string) => void, writeOut: (s: string) => void, setExitCode: (code: number) => void = () => {}): Command {
  const program = new Command('pkg-serve')
    .enablePositionalOptions()
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

  const runCommand = storageOptions(program.command('run'), env)
    .description('run ACTION from the ConfigMap on the node, with the package server on a free loopback port (the container entrypoint)')
    .argument('<action>', 'the script to run: a file in --actions-dir')
    .argument('<storage>', 'storage account name, blob endpoint URL, or local directory')
    .argument('[script-args...]', 'passed to the script unchanged (flags included)')
    .passThroughOptions()
    .addOption(flag('--actions-dir <dir>', 'where the ConfigMap with the actions is mounted').default('/opt/actions'))
    .addOption(flag('--host-dir <dir>', 'where the actions are copied, as this container sees it (a hostPath mount)').default('/mnt/actions'))
    .addOption(flag('--host-path <dir>', 'the same directory as the node sees it').default('/opt/actions'))
    .addOption(flag('--nsenter-target <pid>', "process whose namespaces are the node's (with hostPID, 1)").default('1'))
    .addOption(toggle('--no-nsenter', 'run the script in this container instead of on the node (development)'))
    .addOption(toggle('--once', 'skip the script when this exact script and args already succeeded on this node'))
    .addOption(toggle('--force', 'with --once, run even when a record says it succeeded'))
    .addOption(flag('--on-failure <mode>', 'exit (with the script\'s code) or retry (stay up, not ready, with backoff)').choices(['exit', 'retry']).default('exit'))
    .addOption(toggle('--watch', 'rerun the script when its content in the ConfigMap changes'))
    .addOption(flag('--watch-interval <seconds>', 'seconds between checks of the action for --watch').default('5'))
    .addOption(flag('--state-dir <dir>', 'where status.json and the ready file are written').default('/tmp/pkg-serve'))
    .addOption(toggle('--keep-serving', 'keep the package server listening after the script succeeded'))
    .addOption(toggle('--exit-on-success', 'exit 0 after success instead of idling (Jobs, local runs)'))
    .addOption(flag('--retry-delay <seconds>', 'first delay for --on-failure retry; doubles per failure').default('5'))
    .addOption(flag('--retry-max-delay <seconds>', 'the longest delay between retries').default('300'))
    .addOption(flag('--kill-grace <seconds>', 'seconds between SIGTERM and SIGKILL for the script\'s processes').default('10'))
    .addOption(flag('--ready-timeout <seconds>', 'how long to wait for the manifest before running the script anyway').default('60'))
    .addOption(flag('--port <port>', 'port of the package server (0 picks a free one)').default('0'))
    .addOption(flag('--host <host>', 'address to bind; localhost means 127.0.0.1 and ::1').default('localhost'))
    .addOption(flag('--manifest <blob>', 'manifest blob in the container').default('packages.toml'))
    .addOption(flag('--poll-interval <seconds>', 'seconds between manifest checks (0 disables)').default('30'))
  runCommand.action(async (action: string, storage: string, scriptArgs: string[], options: Record<string, unknown>) => {
    const config = parseConfig(runConfigSchema, { ...options, ...booleanOptions(runCommand, env), action, storage, scriptArgs })
    setExitCode(await run(config, env))
  })

  const publishCommand = storageOptions(program.command('publish'), env)
    .description('upload FILE to the container and set [NAME.TAG] in packages.toml (safe with concurrent publishers)')
    .usage('[STORAGE] FILE --name N --tag T [options]')
    .argument('<storage-and-file...>', 'STORAGE (optional: env PKG_SERVE_STORAGE or AZURE_STORAGE_CONNECTION_STRING) and FILE')
    .addOption(flag('--name <name>', 'package name').makeOptionMandatory())
    .addOption(flag('--tag <tag>', 'tag, e.g. latest or 1.2.3').makeOptionMandatory())
    .addOption(flag('--path <blob>', 'blob name in the container (default: NAME/TAG/FILE\'s name)'))
    .addOption(toggle('--sha256', 'record the sha256 of the bytes uploaded in the manifest, so downloads are verified'))
    .addOption(toggle('--overwrite', 'replace the blob at the path even if it exists or an entry names it (never the manifest)'))
    .addOption(flag('--manifest <blob>', 'manifest blob in the container').default('packages.toml'))
  publishCommand.action(async (positional: string[], options: Record<string, unknown>) => {
    if (positional.length > 2) throw new UsageError(`publish takes [STORAGE] FILE, got ${positional.length} arguments: ${positional.join(' ')}`)
    const [storage, file] = positional.length === 2 ? positional : [env.PKG_SERVE_STORAGE, positional[0]]
    const config = parseConfig(publishConfigSchema, { ...options, ...booleanOptions(publishCommand, env), storage, file })
    await publish(config, env, (line) => writeOut(`${line}\n`))
  })

  storageOptions(program.command('validate'), env)
    .description('check a packages.toml with the server\'s rules; with --remote, that every path exists')
    .argument('<file>', 'the manifest file')
    .addOption(flag('--remote <storage>', 'also check that every path exists in this storage'))
    .action(async (file: string, options: Record<string, unknown>) => {
      const config = parseConfig(validateConfigSchema, { ...options, file })
      setExitCode(await validate(config, env, (line) => writeOut(`${line}\n`), (line) => writeErr(`pkg-serve: ${line}\n`)))
    })

  return program
}

/** Runs the command line; resolves when the command has started (servers keep the process alive). */
export async function main (argv: readonly string[], env: Env = process.env): Promise<number> {
  let exitCode = 0
  const program = buildProgram(env, (s) => process.stderr.write(s), (s) => process.stdout.write(s), (code) => { exitCode = code })
  if (argv.length <= 2) {
    program.outputHelp({ error: true })
    return 2
  }
  try {
    await program.parseAsync([...argv])
    return exitCode
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
      process.stderr.write(`pkg-serve: ${err.message}\n`)
      return 2
    }
    throw err
  }
}
