// Counted nouns for messages and logs ("1 package", "2 packages"): a log line is read by people.

/** "1 package", "2 packages"; `many` for irregular plurals ("entries"). */
export function count (n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`
}
