// V8 flags a node runs with. They size the heap when the process starts, so they must be
// on node's command line: bin/rasputin.mjs's first line carries them, `rasputin cluster`
// passes them to the nodes it starts, and the tests and benchmarks start nodes with them.
//
// --max-semi-space-size=4 (MiB): V8 grows the young generation up to two 16 MiB
// semi-spaces once a process allocates fast (a split storm, a write load) and keeps them
// while it does and for about 20 s after: 32 MiB of RSS whatever the node holds. Capped at
// 4 MiB, the node leading 5,000 idle ranges after a split storm had 139 MiB of RSS instead
// of 187. A put load at 256 ranges does run slower with it (docs/operations.md, "Memory").

export const nodeV8Flags: readonly string[] = ['--max-semi-space-size=4'];

/** Whether this process was started with the V8 flag `name` (on its command line or in NODE_OPTIONS). */
export function startedWith(name: string): boolean {
  const given = (a: string) => a === name || a.startsWith(`${name}=`);
  return process.execArgv.some(given) || (process.env.NODE_OPTIONS ?? '').split(/\s+/).some(given);
}

/** nodeV8Flags that this process's own flags (passed on to a child) do not set already. */
export function missingNodeV8Flags(): string[] {
  return nodeV8Flags.filter((f) => !startedWith(f.split('=')[0]!));
}
