// Small facts about hosts and URLs shared by the server, the storage clients and error messages.
// withoutQuery() is how any URL is shown: a SAS signature lives in the query and must never
// reach a log line or an error message.

import { isIP } from 'node:net'

/** The host as a URL or a Host header writes it: an IPv6 literal in brackets. */
export function bracketHost (host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host
}

/** A URL as it may be shown: without its query (a SAS token) or fragment. Not a URL: cut at `?`. */
export function withoutQuery (url: string | URL): string {
  return String(url).replace(/[?#].*$/s, '')
}
