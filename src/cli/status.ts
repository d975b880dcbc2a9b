// Cluster status by scatter-gather: every node answers `<p>.admin.status`.

import { connect, createInbox } from '@nats-io/transport-node';
import { UnavailableError } from '../protocol/errors.ts';
import { decode, encode, protocolVersion } from '../protocol/wire.ts';
import { subjects } from '../transport/subjects.ts';

export interface RangeStatus {
  rangeId: number;
  role: string;
  term: number;
  leader: string;
  commit: number;
  applied: number;
  lastIndex: number;
  /** The log's compaction point: it holds (snapshotIndex, lastIndex]. Absent from older nodes. */
  snapshotIndex?: number;
  lease: boolean;
  /** Idle: not ticking, no heartbeats (DESIGN.md, "Quiescence and node liveness"). */
  quiescent?: boolean;
  replicas: string[];
  /** Span [start, end); end null: no end. Absent from nodes older than this field. */
  start?: Uint8Array;
  end?: Uint8Array | null;
  generation?: number;
  keys?: number;
  bytes?: number;
  opsPerS?: number;
}

export interface NodeStatus {
  cid: string;
  node: string;
  store: string;
  ranges: RangeStatus[];
  /** Ranges on the node; more than `ranges` holds when the reply had to leave some out. */
  rangesTotal?: number;
  /** Ranges this node leads (all of them, also those left out of `ranges`). */
  leadersTotal?: number;
  stats?: Record<string, number>;
  /** Each LMDB tree's records (entries), pages and depth (Store.trees). */
  trees?: Record<string, { entries: number; pages: number; depth: number }>;
  /** process.memoryUsage() of the node, in bytes. */
  memory?: { rss: number; heapTotal: number; heapUsed: number; external: number };
}

/** A key for display: UTF-8 when printable, else hex (0x...). */
export function showKey(key: Uint8Array | null | undefined, none: string): string {
  if (key === null || key === undefined) return none;
  if (key.length === 0) return '""';
  const text = Buffer.from(key).toString('utf8');
  const printable =
    /^[\x20-\x7e]*$/.test(text) && Buffer.from(text, 'utf8').equals(Buffer.from(key));
  return printable ? text : `0x${Buffer.from(key).toString('hex')}`;
}

export function showBytes(n: number | undefined): string {
  if (n === undefined) return '?';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

/** Asks every node for its status; collects answers for `waitMs`. */
export async function collectStatus(
  url: string,
  prefix: string,
  waitMs: number,
): Promise<NodeStatus[]> {
  const out = await askAll<NodeStatus>(url, subjects.adminStatus(prefix), waitMs);
  return out.sort((a, b) => (a.node < b.node ? -1 : 1));
}

/** One node's placement driver: active on the meta range's leader, with its decisions. */
export interface PlacementStatus {
  node: string;
  active: boolean;
  decisions: {
    atMs: number;
    op: { id: string; kind: string; rangeId?: number; reason: string };
    reason: string;
    outcome?: { status: string; detail?: string };
  }[];
}

export function collectPlacement(
  url: string,
  prefix: string,
  waitMs: number,
): Promise<PlacementStatus[]> {
  return askAll<PlacementStatus>(url, subjects.adminPlacement(prefix), waitMs);
}

/** Publishes one admin request and collects every node's answer for `waitMs`. */
async function askAll<T>(url: string, subject: string, waitMs: number): Promise<T[]> {
  let nc: Awaited<ReturnType<typeof connect>>;
  try {
    nc = await connect({ servers: url, name: 'rasputin-admin' });
  } catch (err) {
    throw new UnavailableError(`cannot reach NATS at ${url}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    const inbox = createInbox();
    const out: T[] = [];
    const sub = nc.subscribe(inbox, {
      callback: (err, msg) => {
        if (err) return;
        try {
          out.push(decode(msg.data) as T);
        } catch {
          // not an answer
        }
      },
    });
    nc.publish(subject, encode({ v: protocolVersion }), { reply: inbox });
    await new Promise((r) => setTimeout(r, waitMs));
    sub.unsubscribe();
    return out;
  } finally {
    await nc.close();
  }
}
