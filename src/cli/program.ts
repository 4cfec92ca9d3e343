// The command line: parses argv + PKG_SERVE_* variables with commander, validates them with
// zod (config.ts), and runs a command. Bad input is one line on stderr and a non-zero exit code;
// nothing here calls process.exit.

import { createRequire } from 'node:module'
import { Command, CommanderError, Option } from 'commander'
import { z } from 'zod'
import { LOG_LEVELS, READ_DEFAULTS, parseBooleanEnv, parseConfig, publishConfigSchema, runConfigSchema, serveConfigSchema, validateConfigSchema } from './config.ts'
import { publish } from './commands/publish.ts'
import { validate } from './commands/validate.ts'
import { run } from './commands/run.ts'
import { serve } from './commands/serve.ts'
import { UserError, errnoCode, isUserError } from '../lib/errors.ts'

type Env = Readonly<Record<string, string | undefined>>

const { version } = z.object({ version: z.string() }).parse(createRequire(import.meta.url)('../../package.json'))

/** The PKG_SERVE_* variable of a flag: --poll-interval reads PKG_SERVE_POLL_INTERVAL. */
function envName (option: Option): string {
  return `PKG_SERVE_${(option.long ?? '').replace(/^--/, '').replaceAll('-', '_').toUpperCase()}`
}

/**
 * An option that also reads PKG_SERVE_<FLAG_IN_CAPS>. The variable is read by readEnv() from
 * the env given to buildProgram, never by commander from process.env.
 */
function flag (flags: string, description: string): Option {
  const option = new Option(flags)
  option.description = `${description} (env: ${envName(option)}${option.isBoolean() ? '=true|false' : ''})`
  return option
}

/**
 * Fills the command's options from their PKG_SERVE_* variables where the command line did not
 * set them, with commander's own checks (choices) for valued options and true/false for boolean
 * ones (commander would take any value, even "false", as true). Runs before the command line is
 * parsed, so the command line wins.
 */
function readEnv (command: Command, env: Env): void {
  for (const option of command.options) {
    if (option.long === undefined || option.long === '--help') continue
    const variable = envName(option)
    const value = env[variable]
    if (value === undefined) continue
    const key = option.attributeName()
    if (option.isBoolean()) {
      const parsed = parseBooleanEnv(variable, value)
      command.setOptionValueWithSource(key, option.negate ? !parsed : parsed, 'env')
      continue
    }
    if (option.argChoices !== undefined && !option.argChoices.includes(value)) {
      command.error(`option '${option.flags}' value '${value}' from env '${variable}' is invalid. Allowed choices are ${option.argChoices.join(', ')}.`, { code: 'commander.invalidArgument' })
    }
    command.setOptionValueWithSource(key, value, 'env')
  }
}

/** How an error names a config key: its flag as declared on the command, else the positional in capitals. */
function flagNamer (command: Command): (key: string) => string {
  const flags = new Map(command.options.map((o) => [o.attributeName(), o.long ?? o.flags]))
  return (key) => flags.get(key) ?? key.replace(/[A-Z]/g, (c) => `-${c}`).toUpperCase()
}

/** The storage flags every command takes (and --log-level). */
function storageOptions (command: Command, env: Env): Command {
  return command
    .addOption(flag('--container <name>', 'blob container holding the packages and the manifest').default('pkg'))
    .addOption(flag('--endpoint-suffix <suffix>', 'blob endpoint suffix for account names (sovereign clouds)').default('core.windows.net'))
    .addOption(flag('--identity-client-id <id>', 'client id of the managed identity to use (default: AZURE_CLIENT_ID, else the kubelet identity)'))
    .addOption(flag('--azure-json <path>', "the node's cloud config, read for the kubelet identity").default('/etc/kubernetes/azure.json'))
    .addOption(flag('--storage-timeout <seconds>', 'longest wait for a storage answer, or for the next bytes of a download').default('30'))
    .addOption(flag('--log-level <level>', 'log level').choices(LOG_LEVELS).default(env.LOG_LEVEL ?? 'info'))
}

/** The package server's flags, shared by `serve` and `run` (which differ only in the default port). */
function serverOptions (command: Command, env: Env, defaultPort: string): Command {
  return storageOptions(command, env)
    .addOption(flag('--port <port>', 'port to listen on (0 picks a free one)').default(defaultPort))
    .addOption(flag('--host <host>', 'address to bind; localhost means 127.0.0.1 and ::1').default('localhost'))
    .addOption(flag('--manifest <blob>', 'manifest blob in the container').default('packages.toml'))
    .addOption(flag('--poll-interval <seconds>', 'seconds between manifest checks (0 disables)').default('30'))
    .addOption(flag('--read-connections <n>', 'storage connections one large download reads over at once (1: one read)').default(String(READ_DEFAULTS.readConnections)))
    .addOption(flag('--read-chunk <MiB>', 'size of each ranged read; blobs of two chunks or more are read in parallel').default(String(READ_DEFAULTS.readChunk)))
    .addOption(flag('--read-ahead <MiB>', 'read-ahead memory shared by all downloads; a download without budget reads with fewer connections').default(String(READ_DEFAULTS.readAhead)))
    .addOption(flag('--read-min-speedup <x>', 'a download goes on in parallel only if that is x times faster than its first chunk read alone (0: always)').default(String(READ_DEFAULTS.readMinSpeedup)))
}

export class UsageError extends UserError {
  override name = 'UsageError'
}

function describeListenError (err: unknown): string | undefined {
  if (!(err instanceof Error) || !('syscall' in err) || err.syscall !== 'listen') return undefined
  const where = `${'address' in err ? String(err.address) : ''}:${'port' in err ? String(err.port) : ''}`
  switch (errnoCode(err)) {
    case 'EADDRINUSE': return `cannot listen on ${where}: the port is in use (choose another --port, or 0 for a free one)`
    case 'EACCES': return `cannot listen on ${where}: permission denied (ports below 1024 need privileges)`
    case 'EADDRNOTAVAIL': return `cannot listen on ${where}: no such local address (check --host)`
    default: return `cannot listen on ${where}: ${err.message}`
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

  // Each subcommand reads its PKG_SERVE_* variables before its command line is parsed.
  program.hook('preSubcommand', (_program, command) => { readEnv(command, env) })

  const serveCommand = serverOptions(program.command('serve'), env, '8080')
    .description('serve packages from STORAGE over HTTP (loopback only by default)')
    .argument('[storage]', 'storage account name, blob endpoint URL, or local directory (env PKG_SERVE_STORAGE)')
  serveCommand.action(async (storage: string | undefined, options: Record<string, unknown>) => {
    const config = parseConfig(serveConfigSchema, { ...options, storage: storage ?? env.PKG_SERVE_STORAGE }, flagNamer(serveCommand))
    await serve(config, env)
  })

  const runCommand = serverOptions(program.command('run'), env, '0')
    .description('run ACTION from the ConfigMap on the node, with the package server on a free loopback port (the container entrypoint)')
    .argument('<action>', 'the script to run: a file in --actions-dir')
    .argument('<storage>', 'storage account name, blob endpoint URL, or local directory')
    .argument('[script-args...]', 'passed to the script unchanged (flags included)')
    .passThroughOptions()
    .addOption(flag('--actions-dir <dir>', 'where the ConfigMap with the actions is mounted').default('/opt/actions'))
    .addOption(flag('--host-dir <dir>', 'where the actions are copied, as this container sees it (a hostPath mount)').default('/mnt/actions'))
    .addOption(flag('--host-path <dir>', 'the same directory as the node sees it').default('/opt/actions'))
    .addOption(flag('--nsenter-target <pid>', "process whose namespaces are the node's (with hostPID, 1)").default('1'))
    .addOption(flag('--no-nsenter', 'run the script in this container instead of on the node (development)'))
    .addOption(flag('--script-cgroup <where>', "the script's cgroup: pod (inside the pod's, its limits apply) or node (on the node, outside them)").choices(['pod', 'node']).default('pod'))
    .addOption(flag('--once', 'skip the script when this exact script and args already succeeded on this node').default(false))
    .addOption(flag('--force', 'with --once, run even when a record says it succeeded').default(false))
    .addOption(flag('--on-failure <mode>', 'exit (with the script\'s code) or retry (stay up, not ready, with backoff)').choices(['exit', 'retry']).default('exit'))
    .addOption(flag('--watch', 'rerun the script when its content in the ConfigMap changes').default(false))
    .addOption(flag('--watch-interval <seconds>', 'seconds between checks of the action for --watch').default('5'))
    .addOption(flag('--state-dir <dir>', 'where status.json and the ready file are written').default('/tmp/pkg-serve'))
    .addOption(flag('--keep-serving', 'keep the package server listening after the script succeeded').default(false))
    .addOption(flag('--exit-on-success', 'exit 0 after success instead of idling (Jobs, local runs)').default(false))
    .addOption(flag('--retry-delay <seconds>', 'first delay for --on-failure retry; doubles per failure').default('5'))
    .addOption(flag('--retry-max-delay <seconds>', 'the longest delay between retries').default('300'))
    .addOption(flag('--kill-grace <seconds>', 'seconds between SIGTERM and SIGKILL for the script\'s processes').default('10'))
    .addOption(flag('--ready-timeout <seconds>', 'how long to wait for the manifest before running the script anyway').default('60'))
  runCommand.action(async (action: string, storage: string, scriptArgs: string[], options: Record<string, unknown>) => {
    const config = parseConfig(runConfigSchema, { ...options, action, storage, scriptArgs }, flagNamer(runCommand))
    setExitCode(await run(config, env))
  })

  const publishCommand = storageOptions(program.command('publish'), env)
    .description('upload FILE to the container and set [NAME.TAG] in packages.toml (safe with concurrent publishers)')
    .usage('[STORAGE] FILE --name N --tag T [options]')
    .argument('<storage-and-file...>', 'STORAGE (optional: env PKG_SERVE_STORAGE or AZURE_STORAGE_CONNECTION_STRING) and FILE')
    .addOption(flag('--name <name>', 'package name').makeOptionMandatory())
    .addOption(flag('--tag <tag>', 'tag, e.g. latest or 1.2.3').makeOptionMandatory())
    .addOption(flag('--path <blob>', 'blob name in the container (default: NAME/TAG/FILE\'s name)'))
    .addOption(flag('--sha256', 'record the sha256 of the bytes uploaded in the manifest, so downloads are verified').default(false))
    .addOption(flag('--overwrite', 'replace the blob at the path even if it exists or an entry names it (never the manifest)').default(false))
    .addOption(flag('--manifest <blob>', 'manifest blob in the container').default('packages.toml'))
  publishCommand.action(async (positional: string[], options: Record<string, unknown>) => {
    if (positional.length > 2) throw new UsageError(`publish takes [STORAGE] FILE, got ${positional.length} arguments: ${positional.join(' ')}`)
    const [storage, file] = positional.length === 2 ? positional : [env.PKG_SERVE_STORAGE, positional[0]]
    const config = parseConfig(publishConfigSchema, { ...options, storage, file }, flagNamer(publishCommand))
    await publish(config, env, (line) => writeOut(`${line}\n`))
  })

  const validateCommand = storageOptions(program.command('validate'), env)
    .description('check a packages.toml with the server\'s rules; with --remote, that every path exists')
    .argument('<file>', 'the manifest file')
    .addOption(flag('--remote <storage>', 'also check that every path exists in this storage'))
  validateCommand.action(async (file: string, options: Record<string, unknown>) => {
    const config = parseConfig(validateConfigSchema, { ...options, file }, flagNamer(validateCommand))
    setExitCode(await validate(config, env, (line) => writeOut(`${line}\n`), (line) => writeErr(`pkg-serve: ${line}\n`)))
  })

  return program
}

/** Where the command line writes: the process's stdout and stderr, or a test's buffers. */
export interface Io {
  readonly out: (s: string) => void
  readonly err: (s: string) => void
}

const processIo: Io = { out: (s) => { process.stdout.write(s) }, err: (s) => { process.stderr.write(s) } }

/** Runs the command line; resolves when the command has started (servers keep the process alive). */
export async function main (argv: readonly string[], env: Env = process.env, io: Io = processIo): Promise<number> {
  let exitCode = 0
  const program = buildProgram(env, io.err, io.out, (code) => { exitCode = code })
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
      io.err(`pkg-serve: ${listen}\n`)
      return 1
    }
    if (isUserError(err)) {
      io.err(`pkg-serve: ${err.message}\n`)
      return 2
    }
    throw err
  }
}
