// The peers under the same load, in the same run: NATS JetStream KV with 3 replicas and
// etcd with 3 members, started by the scripts in the peers folder (a copy of
// /work/shared/peers, with `npm install` run in it) and driven by its loadgen.mjs.
// Their clusters are stopped by their scripts (which kill only the PIDs they recorded),
// also on error and on a signal.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { onEmergency, onPath, runNow, runToEnd } from './procs.ts';
import type { Op } from './shape.ts';

export interface PeerRow {
  workload: Op | 'fill';
  inflight: number;
  system: 'nats-kv-r3' | 'etcd-x3';
  ops: number;
  ops_per_s: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  errors: number;
  cas_fail: number;
  elapsed_s: number;
  client_cpu_us_per_op: number | null;
  server_cpu_us_per_op: number | null;
  first_err?: string;
}

export interface PeerOptions {
  dir: string;
  workloads: readonly Op[];
  inflights: readonly number[];
  durationS: number;
  warmupS: number;
  keyspace: number;
  /** Progress (stderr). */
  log: (line: string) => void;
  /** Called with every row as it is measured. */
  onRow: (row: PeerRow) => void;
}

export const peersSetupHelp = (dir: string): string =>
  [
    `peers are not set up in ${dir}; to set them up:`,
    '  apt-get update && apt-get install -y nats-server etcd-server etcd-client',
    `  rm -rf ${dir} && cp -r /work/shared/peers ${dir} && chmod -R u+w ${dir}`,
    `  (cd ${dir} && npm install)`,
  ].join('\n');

/** Why the peers cannot run here (undefined when they can). */
export function peersSetupProblem(dir: string): string | undefined {
  const need = [
    'loadgen.mjs',
    'nats-cluster.sh',
    'etcd-cluster.sh',
    'nats-kv-setup.mjs',
    'node_modules/@nats-io/kv',
    'node_modules/@nats-io/jetstream',
    'node_modules/etcd3',
  ];
  const missing = need.filter((f) => !existsSync(join(dir, f)));
  return missing.length > 0 ? `missing in ${dir}: ${missing.join(', ')}` : undefined;
}

interface PeerSystem {
  system: PeerRow['system'];
  loadgenSystem: 'nats' | 'etcd';
  script: string;
  base: string;
  binaries: string[];
  /** Extra setup after the cluster is up (the KV bucket). */
  prepare?: (endpoints: string) => Promise<void>;
  extraArgs: string[];
}

/** Runs NATS KV R3 and then etcd x3; a system that cannot run is skipped with a note. */
export async function runPeers(o: PeerOptions): Promise<{ rows: PeerRow[]; notes: string[] }> {
  const rows: PeerRow[] = [];
  const notes: string[] = [];
  const systems: PeerSystem[] = [
    {
      system: 'nats-kv-r3',
      loadgenSystem: 'nats',
      script: 'nats-cluster.sh',
      base: '/tmp/peers-nats',
      binaries: ['nats-server'],
      extraArgs: ['--bucket', 'peers'],
      prepare: async (endpoints) => {
        const r = await runToEnd(
          'nats-kv-setup',
          process.execPath,
          ['nats-kv-setup.mjs', '--endpoints', endpoints, '--bucket', 'peers', '--replicas', '3'],
          { cwd: o.dir, timeoutMs: 60_000 },
        );
        if (r.code !== 0) {
          throw new Error(`nats-kv-setup failed:\n${[...r.stdout, ...r.stderr].join('\n')}`);
        }
        o.log(`  bucket: ${r.stdout.join(' ')}`);
      },
    },
    {
      system: 'etcd-x3',
      loadgenSystem: 'etcd',
      script: 'etcd-cluster.sh',
      base: '/tmp/peers-etcd',
      binaries: ['etcd', 'etcdctl'],
      extraArgs: [],
    },
  ];
  for (const s of systems) {
    const absent = s.binaries.filter((b) => !onPath(b));
    if (absent.length > 0) {
      notes.push(`${s.system} skipped: ${absent.join(', ')} not installed`);
      continue;
    }
    const pidsFile = join(s.base, 'pids');
    if (existsSync(pidsFile) && readFileSync(pidsFile, 'utf8').trim() !== '') {
      notes.push(
        `${s.system} skipped: ${pidsFile} exists (a cluster from another run is up; ` +
          `stop it with ${join(o.dir, s.script)} stop if it is yours)`,
      );
      continue;
    }
    try {
      rows.push(...(await runSystem(o, s)));
    } catch (err) {
      notes.push(`${s.system} failed: ${(err as Error).message}`);
    }
  }
  return { rows, notes };
}

async function runSystem(o: PeerOptions, s: PeerSystem): Promise<PeerRow[]> {
  const script = join(o.dir, s.script);
  const stopNow = () => runNow('bash', [script, 'stop'], o.dir);
  const unregister = onEmergency(stopNow);
  const rows: PeerRow[] = [];
  o.log(`${s.system}: starting 3 members (${s.script} start 3)`);
  try {
    const started = await runToEnd(`${s.script} start`, 'bash', [script, 'start', '3'], {
      cwd: o.dir,
      timeoutMs: 90_000,
    });
    if (started.code !== 0 || started.timedOut) {
      throw new Error(
        `${s.script} start 3 failed:\n${[...started.stdout, ...started.stderr].join('\n')}`,
      );
    }
    const endpoints = readFileSync(join(s.base, 'endpoints'), 'utf8').trim();
    const pids = readFileSync(join(s.base, 'pids'), 'utf8').trim().split(/\s+/).join(',');
    await s.prepare?.(endpoints);
    const loadgen = async (op: Op | 'fill', inflight: number): Promise<PeerRow> => {
      const args = [
        'loadgen.mjs',
        '--system',
        s.loadgenSystem,
        '--op',
        op,
        '--conc',
        String(inflight),
        '--endpoints',
        endpoints,
        '--duration',
        String(o.durationS),
        '--warmup',
        String(o.warmupS),
        '--keyspace',
        String(o.keyspace),
        '--server-pids',
        pids,
        '--label',
        `${s.system}-${op}-c${inflight}`,
        ...s.extraArgs,
      ];
      // loadgen's own hard limit is warmup + duration + 120 s; fill has only that one.
      const timeoutMs = (o.warmupS + o.durationS + 150) * 1000;
      const r = await runToEnd(`loadgen ${op}`, process.execPath, args, {
        cwd: o.dir,
        timeoutMs,
      });
      const json = [...r.stdout].reverse().find((l) => l.startsWith('{'));
      if (r.code !== 0 || json === undefined) {
        const why = `code ${r.code}${r.timedOut ? ', timed out' : ''}`;
        throw new Error(
          `loadgen ${op} c${inflight} failed (${why}):\n` +
            [...r.stdout, ...r.stderr].slice(-20).join('\n'),
        );
      }
      const j = JSON.parse(json) as Record<string, unknown>;
      const num = (k: string): number => (typeof j[k] === 'number' ? (j[k] as number) : Number.NaN);
      const nullable = (k: string): number | null => (typeof j[k] === 'number' ? num(k) : null);
      const row: PeerRow = {
        workload: op,
        inflight,
        system: s.system,
        ops: num('ops'),
        ops_per_s: num('ops_per_s'),
        p50_ms: num('p50_ms'),
        p90_ms: num('p90_ms'),
        p99_ms: num('p99_ms'),
        max_ms: num('max_ms'),
        errors: num('errors'),
        cas_fail: num('casFail'),
        elapsed_s: num('elapsed_s'),
        client_cpu_us_per_op: nullable('client_cpu_us_per_op'),
        server_cpu_us_per_op: nullable('server_cpu_us_per_op'),
        ...(typeof j.firstErr === 'string' ? { first_err: j.firstErr } : {}),
      };
      o.onRow(row);
      return row;
    };
    o.log(`${s.system}: fill ${o.keyspace} keys, 64 in flight`);
    await loadgen('fill', 64);
    for (const op of o.workloads) {
      for (const inflight of o.inflights) rows.push(await loadgen(op, inflight));
    }
    return rows;
  } finally {
    o.log(`${s.system}: stopping (${s.script} stop)`);
    const stopped = await runToEnd(`${s.script} stop`, 'bash', [script, 'stop'], {
      cwd: o.dir,
      timeoutMs: 60_000,
    });
    unregister();
    if (stopped.code !== 0 || stopped.timedOut) {
      o.log(`${s.system}: stop script failed (code ${stopped.code}); see ${s.base}/pids`);
    }
  }
}
