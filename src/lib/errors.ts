// Errors whose message is all the user needs: the CLI prints them as one line, no stack trace.
// Every module's "you asked for something we cannot do" error extends UserError, so the one
// place that prints errors needs no list of classes. Also the errno helper used wherever a
// system call's failure is told apart by its code.

/** An error whose message says what went wrong and what to do; printed without a stack. */
export class UserError extends Error {
  override name = 'UserError'
}

export function isUserError (err: unknown): err is UserError {
  return err instanceof UserError
}

/** The errno code of a failed system call (`ENOENT`, `EADDRINUSE`, …), if it has one. */
export function errnoCode (err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined
  return typeof err.code === 'string' ? err.code : undefined
}

/** What went wrong, for a message: an Error's message, or whatever was thrown, as text. */
export function messageOf (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
