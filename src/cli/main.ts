// The `rasputin` command.
//
//   rasputin start --node-id ID --nats URL --storage-dir DIR [--initial-nodes a,b,c] [--logfile F]
//   rasputin cluster [--dir DIR] [--nodes 3]      nats-server and a local cluster, Ctrl-C stops it
//   rasputin get KEY | set KEY VALUE | cas KEY EXPECTED|--absent NEW | del KEY
//   rasputin scan [START [END]] [--limit N]        KEY<TAB>VALUE lines in key order
//   rasputin subscribe PREFIX [--from CURSOR]      the mutations under PREFIX, in order, resumable
//   rasputin status
//
// Client commands find the cluster through --nats, then RASPUTIN_NATS, then
// nats://127.0.0.1:4222 (where `rasputin cluster` puts it when the port is free).

import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { Client } from '../client/index.ts';
import { ConfigError, defaultNatsUrl, parseNodeConfig } from '../node/config.ts';
import { Node } from '../node/node.ts';
import { RasputinError } from '../protocol/errors.ts';
import { defaultPrefix } from '../transport/subjects.ts';
import { runCluster } from './cluster.ts';
import { missingNodeV8Flags, startedWith } from './node-flags.ts';
import {
  collectPlacement,
  collectStatus,
  type NodeStatus,
  type RangeStatus,
  showBytes,
  showKey,
} from './status.ts';

const usage = `usage:
  rasputin start --node-id ID --storage-dir DIR [--nats URL] [--initial-nodes a,b,c]
                 [--logfile FILE] [--prefix P] [--tick-ms N] [--log-entries-max N]
                 [--log-memory-max BYTES]
                 [--split-bytes N] [--watch on|off] [--balance-leaders on|off]
                 [--events-retain N]
                 [--events-retain-s S] [--dedup-window-s S] [--events-polls-max N]
  rasputin cluster [--dir DIR] [--nodes N] [--split-bytes N]   (default 64 KiB, for demos)
  rasputin get KEY
  rasputin set KEY VALUE
  rasputin cas KEY EXPECTED NEW        (--absent instead of EXPECTED: expect no value)
  rasputin del KEY
  rasputin scan [START [END]] [--limit N]   KEY<TAB>VALUE lines of [START, END), N default 100
  rasputin status
  rasputin split KEY                   split the range holding KEY at KEY
  rasputin transfer KEY NODE           move the leadership of the range holding KEY to NODE
  rasputin watch [PATTERN]             print mutations as they apply: '' all keys, 'a.' keys
                                       under a., else that key (at most once, no history)
  rasputin subscribe PREFIX [--from CURSOR] [--count N]
                                       print the mutations of keys under PREFIX ('' all) as
                                       they apply, in order, each once, with the cursor to
                                       resume after it (--from); from now by default;
                                       stop after N events
  rasputin ranges                      span, replicas, leader, generation, size, keys, ops/s
  rasputin nodes                       every node: store, ranges, leaders, counters
  rasputin placement                   the placement driver's recent decisions, with reasons
common options: --nats URL (or RASPUTIN_NATS), --prefix P (or RASPUTIN_PREFIX), --timeout-ms N`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'start':
      return start(rest);
    case 'cluster':
      return runCluster(rest);
    case 'get':
    case 'set':
    case 'cas':
    case 'del':
      return data(command, rest);
    case 'scan':
      return scan(rest);
    case 'status':
      return status(rest);
    case 'split':
      return split(rest);
    case 'transfer':
      return transfer(rest);
    case 'watch':
      return watch(rest);
    case 'subscribe':
      return subscribe(rest);
    case 'ranges':
      return ranges(rest);
    case 'placement':
      return placement(rest);
    case 'nodes':
      return nodes(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      console.log(usage);
      return command === undefined ? 2 : 0;
    default:
      console.error(`unknown command ${JSON.stringify(command)}\n${usage}`);
      return 2;
  }
}

/**
 * A node's heap grows by at most half of what is live after a full GC, unless node was
 * started with its own --heap-growing-percent. V8's default lets a heap that allocates
 * fast grow up to 4x, and a node allocates fast while it splits and serves: the node that
 * led 10,000 idle ranges kept about 33 KiB of RSS per range, 22 KiB with this, at the same
 * throughput and idle CPU (docs/operations.md, "Memory").
 */
function limitHeapGrowth(): void {
  if (!startedWith('--heap-growing-percent')) v8.setFlagsFromString('--heap-growing-percent=50');
}

async function start(args: string[]): Promise<number> {
  let config: ReturnType<typeof parseNodeConfig>;
  try {
    config = parseNodeConfig(args);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`rasputin start: ${err.message}\n${usage}`);
      return 2;
    }
    throw err;
  }
  limitHeapGrowth();
  const node = new Node(config);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    node.log.info(`${signal}: stopping`);
    await node.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  await node.start();
  const missing = missingNodeV8Flags();
  if (missing.length > 0) {
    node.log.info(
      `started without ${missing.join(' ')}: the young generation may keep up to 32 MiB ` +
        'more (start nodes with bin/rasputin.mjs, or give node the flag)',
    );
  }
  // The line process supervisors and the test harness wait for.
  console.log(`rasputin node ${config.nodeId} ready (nats ${config.natsUrl})`);
  return -1; // keep running
}

/** The options of every command that talks to a cluster. */
const clientOptions = {
  nats: { type: 'string' },
  prefix: { type: 'string' },
  'timeout-ms': { type: 'string' },
} as const;

function commonOptions(args: string[]) {
  return parseArgs({
    args,
    options: { ...clientOptions, absent: { type: 'boolean' } },
    allowPositionals: true,
    strict: true,
  });
}

function natsUrl(v: Record<string, unknown>): string {
  return (v.nats as string | undefined) ?? process.env.RASPUTIN_NATS ?? defaultNatsUrl;
}

function prefixOf(v: Record<string, unknown>): string {
  return (v.prefix as string | undefined) ?? process.env.RASPUTIN_PREFIX ?? defaultPrefix;
}

function show(value: Uint8Array | null | undefined): string {
  if (value === null || value === undefined) return '(none)';
  return Buffer.from(value).toString('utf8');
}

/**
 * Runs a command with a client of the cluster the options name, and closes it; an
 * expected failure (a RasputinError) is one line on stderr and exit code 1.
 */
async function withClient(
  command: string,
  values: Record<string, unknown>,
  defaultTimeoutMs: number,
  run: (client: Client) => Promise<number>,
): Promise<number> {
  const timeout = values['timeout-ms'];
  const client = await Client.connect({
    servers: natsUrl(values),
    prefix: prefixOf(values),
    timeoutMs: timeout ? Number(timeout) : defaultTimeoutMs,
  });
  try {
    return await run(client);
  } catch (err) {
    if (err instanceof RasputinError) {
      console.error(`rasputin ${command}: ${err.name}: ${err.message}`);
      return 1;
    }
    throw err;
  } finally {
    await client.close();
  }
}

/** Written out before main() exits the process (pipes are asynchronous on some systems). */
function writeOut(text: string): Promise<void> {
  return new Promise<void>((resolve) => process.stdout.write(text, () => resolve()));
}

/** Aborts on Ctrl-C or SIGTERM: the end of a command that follows changes. */
function stopOnSignal(): AbortSignal {
  const stop = new AbortController();
  process.once('SIGINT', () => stop.abort());
  process.once('SIGTERM', () => stop.abort());
  return stop.signal;
}

async function data(command: 'get' | 'set' | 'cas' | 'del', args: string[]): Promise<number> {
  const { values, positionals } = commonOptions(args);
  const arity = { get: 1, set: 2, del: 1, cas: values.absent ? 2 : 3 }[command];
  if (positionals.length !== arity) {
    console.error(`rasputin ${command}: expected ${arity} argument(s)\n${usage}`);
    return 2;
  }
  return withClient(command, values, 5000, async (client) => {
    const [key, a, b] = positionals as [string, string?, string?];
    if (command === 'get') {
      const r = await client.get(key);
      if (r === null) {
        console.log('(not found)');
        return 1;
      }
      console.log(show(r.value));
    } else if (command === 'set') {
      await client.set(key, a!);
      console.log('OK');
    } else if (command === 'cas') {
      const expected = values.absent ? null : a!;
      const next = values.absent ? a! : b!;
      const r = await client.cas(key, expected, next);
      console.log(`${r.success ? 'OK' : 'FAILED'} current=${show(r.value)}`);
      return r.success ? 0 : 1;
    } else {
      const r = await client.del(key);
      console.log(`OK last=${show(r.value)}`);
    }
    return 0;
  });
}

async function watch(args: string[]): Promise<number> {
  const { values, positionals } = commonOptions(args);
  if (positionals.length > 1) {
    console.error(`rasputin watch: expected at most 1 argument (PATTERN)\n${usage}`);
    return 2;
  }
  const signal = stopOnSignal();
  return withClient('watch', values, 5000, async (client) => {
    for await (const e of client.watch(positionals[0] ?? '', { signal })) {
      const line =
        e.op === 'set'
          ? `set\t${show(e.key)}\t${show(e.value)}\t(revision ${e.revision}, range ${e.range})`
          : `del\t${show(e.key)}\t\t(revision ${e.revision}, range ${e.range})`;
      console.log(line);
    }
    return 0;
  });
}

/**
 * Prints OP<TAB>KEY<TAB>VALUE<TAB>REVISION<TAB>RANGE<TAB>CURSOR per event (a del has an
 * empty VALUE), and the starting cursor on stderr: pass a CURSOR to --from to resume
 * right after that event.
 */
async function subscribe(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { ...clientOptions, from: { type: 'string' }, count: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 1) {
    console.error(`rasputin subscribe: expected at most 1 argument (PREFIX)\n${usage}`);
    return 2;
  }
  const count = values.count === undefined ? undefined : Number(values.count);
  if (count !== undefined && !(Number.isInteger(count) && count >= 1)) {
    console.error(`rasputin subscribe: --count must be a positive integer, got ${values.count}`);
    return 2;
  }
  const signal = stopOnSignal();
  return withClient('subscribe', values, 5000, async (client) => {
    const sub = client.subscribe(positionals[0] ?? '', {
      signal,
      ...(values.from === undefined ? {} : { fromRevision: values.from }),
    });
    sub.started.then(
      (cursor) => console.error(`(subscribed; cursor ${cursor})`),
      () => {},
    );
    let seen = 0;
    for await (const e of sub) {
      const value = e.op === 'set' ? show(e.value) : '';
      await writeOut(`${e.op}\t${show(e.key)}\t${value}\t${e.revision}\t${e.range}\t${e.cursor}\n`);
      if (count !== undefined && ++seen >= count) break;
    }
    return 0;
  });
}

async function split(args: string[]): Promise<number> {
  const { values, positionals } = commonOptions(args);
  if (positionals.length !== 1) {
    console.error(`rasputin split: expected 1 argument (KEY)\n${usage}`);
    return 2;
  }
  return withClient('split', values, 10_000, async (client) => {
    const ds = await client.split(positionals[0]!);
    const span = (d: (typeof ds)[number]) =>
      `range ${d.rangeId} [${showKey(d.start, "''")}, ${showKey(d.end, '(end)')})`;
    if (ds.length === 1) {
      console.log(`OK ${span(ds[0]!)} already starts there (generation ${ds[0]!.generation})`);
    } else {
      console.log(`OK ${span(ds[0]!)} and ${span(ds[1]!)}, generation ${ds[0]!.generation}`);
    }
    return 0;
  });
}

async function transfer(args: string[]): Promise<number> {
  const { values, positionals } = commonOptions(args);
  if (positionals.length !== 2) {
    console.error(`rasputin transfer: expected 2 arguments (KEY NODE)\n${usage}`);
    return 2;
  }
  const [key, nodeId] = positionals as [string, string];
  return withClient('transfer', values, 10_000, async (client) => {
    const { descriptor: d, leader } = await client.transferLeader(key, nodeId);
    // The old leader steps down when the target campaigns, mostly before the election is
    // over: ask the nodes who leads now, for two seconds at most.
    let now = leader;
    for (let i = 0; now === '' && i < 10; i++) {
      await new Promise((done) => setTimeout(done, 200));
      const nodes = await collectStatus(natsUrl(values), prefixOf(values), 300);
      const led = nodes.find((n) =>
        n.ranges.some((r) => r.rangeId === d.rangeId && r.role === 'leader'),
      );
      now = led?.node ?? '';
    }
    const who = now === '' ? 'its election is not over yet' : `led by ${now}`;
    console.log(`OK range ${d.rangeId} (generation ${d.generation}) ${who}`);
    return 0;
  });
}

async function scan(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { ...clientOptions, limit: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 2) {
    console.error(`rasputin scan: expected at most 2 arguments (START END)\n${usage}`);
    return 2;
  }
  const limit = values.limit === undefined ? undefined : Number(values.limit);
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1)) {
    console.error(`rasputin scan: --limit must be a positive integer, got ${values.limit}`);
    return 2;
  }
  return withClient('scan', values, 5000, async (client) => {
    const [start = '', end] = positionals as [string?, string?];
    const r = await client.scan(start, end ?? null, limit === undefined ? {} : { limit });
    await writeOut(r.entries.map((e) => `${show(e.key)}\t${show(e.value)}\n`).join(''));
    if (r.next !== undefined) {
      console.error(`(limit ${r.entries.length} reached; more from ${show(r.next)})`);
    }
    return 0;
  });
}

/** Every node's status reply, or null (said on stderr) when none answered. */
async function askNodes(args: string[]): Promise<NodeStatus[] | null> {
  const { values } = commonOptions(args);
  const nodes = await collectStatus(natsUrl(values), prefixOf(values), 500);
  if (nodes.length > 0) return nodes;
  console.error(`no node answered on ${natsUrl(values)} (prefix ${prefixOf(values)})`);
  return null;
}

async function status(args: string[]): Promise<number> {
  const nodes = await askNodes(args);
  if (nodes === null) return 1;
  console.log(`cluster ${nodes[0]!.cid || '(not bootstrapped)'}, ${nodes.length} node(s) answered`);
  console.log(
    `${'node'.padEnd(8)}${'range'.padStart(6)}  ${'role'.padEnd(13)}${'term'.padStart(6)}  ` +
      `${'leader'.padEnd(8)}${'commit'.padStart(9)}${'applied'.padStart(9)}${'last'.padStart(9)}  lease  members`,
  );
  for (const n of nodes) {
    for (const r of n.ranges) {
      console.log(
        `${n.node.padEnd(8)}${String(r.rangeId).padStart(6)}  ${r.role.padEnd(13)}${String(r.term).padStart(6)}  ` +
          `${(r.leader || '-').padEnd(8)}${String(r.commit).padStart(9)}${String(r.applied).padStart(9)}` +
          `${String(r.lastIndex).padStart(9)}  ${(r.lease ? 'yes' : 'no').padEnd(5)}  ${r.replicas.join(',')}`,
      );
    }
  }
  return 0;
}

/** One row per range, as its leader (or, without one, any replica) reports it. */
async function ranges(args: string[]): Promise<number> {
  const nodes = await askNodes(args);
  if (nodes === null) return 1;
  const byRange = new Map<number, { node: string; r: RangeStatus }>();
  for (const n of nodes) {
    for (const r of n.ranges) {
      const seen = byRange.get(r.rangeId);
      if (!seen || (r.role === 'leader' && seen.r.role !== 'leader'))
        byRange.set(r.rangeId, { node: n.node, r });
    }
  }
  console.log(
    `${'range'.padStart(5)}  ${'start'.padEnd(12)} ${'end'.padEnd(12)} ${'gen'.padStart(4)}  ` +
      `${'leader'.padEnd(8)}${'term'.padStart(6)}  ${'keys'.padStart(9)} ${'size'.padStart(10)} ` +
      `${'ops/s'.padStart(7)}  replicas`,
  );
  const cut = nodes.filter((n) => (n.rangesTotal ?? 0) > n.ranges.length);
  if (cut.length > 0) {
    console.error(
      `(${cut.map((n) => `${n.node} listed ${n.ranges.length} of its ${n.rangesTotal} ranges`).join('; ')}: ` +
        'ranges led elsewhere may be missing)',
    );
  }
  // In keyspace order.
  const rows = [...byRange].sort((a, b) =>
    Buffer.compare(Buffer.from(a[1].r.start ?? []), Buffer.from(b[1].r.start ?? [])),
  );
  for (const [id, { r }] of rows) {
    console.log(
      `${String(id).padStart(5)}  ${showKey(r.start, '?').padEnd(12)} ${showKey(r.end, '(end)').padEnd(12)} ` +
        `${String(r.generation ?? '?').padStart(4)}  ${(r.leader || '-').padEnd(8)}${String(r.term).padStart(6)}  ` +
        `${String(r.keys ?? '?').padStart(9)} ${showBytes(r.bytes).padStart(10)} ` +
        `${String(r.opsPerS ?? '?').padStart(7)}  ${r.replicas.join(',')}`,
    );
  }
  return 0;
}

async function placement(args: string[]): Promise<number> {
  const { values } = commonOptions(args);
  const answers = await collectPlacement(natsUrl(values), prefixOf(values), 500);
  const active = answers.find((a) => a.active);
  if (answers.length === 0) {
    console.error(`no node answered on ${natsUrl(values)} (prefix ${prefixOf(values)})`);
    return 1;
  }
  if (!active) {
    console.log(`no active placement driver (the meta range has no leader right now)`);
    return 0;
  }
  console.log(`placement driver on node ${active.node}; ${active.decisions.length} decision(s)`);
  for (const d of active.decisions) {
    const outcome = d.outcome
      ? `${d.outcome.status}${d.outcome.detail ? `: ${d.outcome.detail}` : ''}`
      : 'in flight';
    console.log(`  ${d.op.id.padEnd(24)} ${outcome.padEnd(12)} ${d.reason}`);
  }
  return 0;
}

async function nodes(args: string[]): Promise<number> {
  const answered = await askNodes(args);
  if (answered === null) return 1;
  console.log(
    `${'node'.padEnd(8)}${'store'.padEnd(38)}${'ranges'.padStart(7)}${'leaders'.padStart(8)}` +
      `${'requests'.padStart(10)}${'raft in'.padStart(10)}${'dropped'.padStart(8)}` +
      `${'rss'.padStart(11)}${'heap used'.padStart(11)}${'log mem'.padStart(11)}`,
  );
  for (const n of answered) {
    const ranges = n.rangesTotal ?? n.ranges.length;
    const leaders = n.leadersTotal ?? n.ranges.filter((r) => r.role === 'leader').length;
    const st = n.stats ?? {};
    console.log(
      `${n.node.padEnd(8)}${n.store.padEnd(38)}${String(ranges).padStart(7)}` +
        `${String(leaders).padStart(8)}${String(st.clientRequests ?? '?').padStart(10)}` +
        `${String(st.raftMessagesIn ?? '?').padStart(10)}${String(st.dropped ?? '?').padStart(8)}` +
        `${showBytes(n.memory?.rss).padStart(11)}${showBytes(n.memory?.heapUsed).padStart(11)}` +
        `${showBytes(st.logMemoryBytes).padStart(11)}`,
    );
  }
  console.log(
    `cluster ${answered[0]!.cid || '(not bootstrapped)'}, ${answered.length} node(s) answered`,
  );
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    // Expected failures (a cluster that cannot be reached, a refused request) in one line;
    // anything else is a bug: show the stack.
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_')) {
      // An unknown or malformed flag: a usage error.
      console.error(`rasputin: ${(err as Error).message}\n${usage}`);
      process.exit(2);
    }
    if (err instanceof RasputinError) console.error(`rasputin: ${err.name}: ${err.message}`);
    else console.error(`rasputin: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  },
);
