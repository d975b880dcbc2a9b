// A get/set/cas/del load on a few keys that records every operation as a history
// (test/sim/history.ts, docs/history-format.md) for the WGL checker: shared by the
// integration tests that check linearizability on real processes.
//
// Each client runs one operation at a time on a random key that still has operations
// left, until its deadline or until every key had opsPerKeyMax. An operation that ends
// in `info` (outcome unknown) retires its process id (as Knossos expects): the client
// goes on under a new one.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Client } from '../../src/client/index.ts';
import { fromJsonLines, type HistoryOp, toJsonLines } from '../sim/history.ts';
import {
  checkLinearizable,
  describeOp,
  type LinearizabilityResult,
} from '../sim/linearizability.ts';
import { errorCode, nowMs, sleep } from './helpers.ts';

const base = process.hrtime.bigint();

/** Nanoseconds since this module loaded, on the monotonic clock (history timestamps). */
export function ns(): number {
  return Number(process.hrtime.bigint() - base);
}

/** ok, fail (definitely not applied) or info (outcome unknown), from a thrown error. */
export function typeOf(err: unknown): 'fail' | 'info' {
  const code = errorCode(err);
  return code === 'InvalidArgument' || code === 'BadRequest' ? 'fail' : 'info';
}

export interface HistoryLoadOptions {
  readonly keys: readonly string[];
  /** Operations per key (final reads not counted), so the check stays fast. */
  readonly opsPerKeyMax: number;
  /** The load ends by itself this long after it started. */
  readonly loadMs: number;
  /** Think time between a client's operations, uniform in [min, max). */
  readonly pauseMsMin: number;
  readonly pauseMsMax: number;
}

export interface HistoryLoad {
  readonly history: HistoryOp[];
  /** Errors the callers saw, by code. */
  readonly errors: Map<string, number>;
  readonly opsPerKey: Map<string, number>;
  /** Resolves when every client has stopped. */
  readonly done: Promise<void>;
  /** Stops the clients early and waits for their last operations. */
  stop(): Promise<void>;
}

/** Starts one closed-loop client per entry of `clients`; process ids are 0 .. n-1 at first. */
export function startHistoryLoad(
  clients: readonly Client[],
  opts: HistoryLoadOptions,
): HistoryLoad {
  const { keys } = opts;
  const clientCount = clients.length;
  const history: HistoryOp[] = [];
  const opsPerKey = new Map(keys.map((k) => [k, 0]));
  /** The last value a client saw per key: good cas expectations. */
  const seen = new Map<string, string | null>();
  const errors = new Map<string, number>();
  let stopped = false;
  const loadEnd = nowMs() + opts.loadMs;

  const runClient = async (c: number) => {
    const client = clients[c]!;
    let processId = c;
    for (let n = 0; !stopped && nowMs() < loadEnd; n++) {
      const open = keys.filter((k) => opsPerKey.get(k)! < opts.opsPerKeyMax);
      if (open.length === 0) break;
      const key = open[Math.floor(Math.random() * open.length)]!;
      opsPerKey.set(key, opsPerKey.get(key)! + 1);
      const roll = Math.random();
      const f: HistoryOp['f'] =
        roll < 0.35 ? 'get' : roll < 0.6 ? 'set' : roll < 0.9 ? 'cas' : 'del';
      const value = `c${c}-${n}`;
      const expectRoll = Math.random();
      const expected =
        expectRoll < 0.7 ? (seen.get(key) ?? null) : expectRoll < 0.85 ? null : 'never';
      const op: HistoryOp = {
        process: processId,
        f,
        key,
        value: f === 'set' || f === 'cas' ? value : null,
        expect: f === 'cas' ? expected : null,
        ok: null,
        type: 'info',
        invoke: ns(),
        complete: 0,
      };
      try {
        if (f === 'get') {
          const r = await client.get(key);
          op.value = r === null ? null : r.value.toString('utf8');
          seen.set(key, op.value);
        } else if (f === 'set') {
          await client.set(key, value);
          seen.set(key, value);
        } else if (f === 'cas') {
          const r = await client.cas(key, expected, value);
          op.ok = r.success;
          seen.set(key, r.value === null ? null : r.value.toString('utf8'));
        } else {
          const r = await client.del(key);
          op.value = r.value === null ? null : r.value.toString('utf8');
          seen.set(key, null);
        }
        op.type = 'ok';
      } catch (err) {
        op.type = typeOf(err);
        const code = errorCode(err);
        errors.set(code, (errors.get(code) ?? 0) + 1);
        if (f === 'del') op.value = null;
      }
      op.complete = ns();
      history.push(op);
      if (op.type === 'info') processId += clientCount;
      await sleep(opts.pauseMsMin + Math.random() * (opts.pauseMsMax - opts.pauseMsMin));
    }
  };

  const done = Promise.all(clients.map((_, c) => runClient(c))).then(() => undefined);
  return {
    history,
    errors,
    opsPerKey,
    done,
    stop: async () => {
      stopped = true;
      await done;
    },
  };
}

/** The process id of finalReads' operations. */
export const finalReadProcess = 10_000;

/** The value each key's final read found (keys whose final reads all failed are absent). */
export function finalValues(history: readonly HistoryOp[]): Map<string, string | null> {
  const finals = new Map<string, string | null>();
  for (const op of history) if (op.process === finalReadProcess) finals.set(op.key, op.value);
  return finals;
}

/** The state every key ended in: one `get` per key (up to 10 attempts) appended to `history`. */
export async function finalReads(
  reader: Client,
  keys: readonly string[],
  history: HistoryOp[],
): Promise<void> {
  for (const key of keys) {
    for (let attempt = 0; attempt < 10; attempt++) {
      const invoke = ns();
      try {
        const r = await reader.get(key);
        history.push({
          process: finalReadProcess,
          f: 'get',
          key,
          value: r === null ? null : r.value.toString('utf8'),
          expect: null,
          ok: null,
          type: 'ok',
          invoke,
          complete: ns(),
        });
        break;
      } catch {
        await sleep(200);
      }
    }
  }
}

/** Writes the history as JSON lines to a new temp file; returns its path and the file read back. */
export async function saveHistory(
  name: string,
  history: readonly HistoryOp[],
): Promise<{ file: string; reread: HistoryOp[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'rasputin-history-'));
  const file = join(dir, `${name}.jsonl`);
  await writeFile(file, toJsonLines(history));
  return { file, reread: fromJsonLines(await readFile(file, 'utf8')) };
}

/**
 * Removes a history saveHistory wrote, once the test that wrote it passed: a failed test
 * leaves its history (its path is printed) for study.
 */
export async function dropSavedHistory(file: string): Promise<void> {
  await rm(dirname(file), { recursive: true, force: true });
}

/** Operations of a history by type. */
export function countType(history: readonly HistoryOp[], type: HistoryOp['type']): number {
  return history.filter((op) => op.type === type).length;
}

/** One line on what the load did: operations by type, errors by code, operations per key. */
export function describeLoad(load: HistoryLoad): string {
  const h = load.history;
  return (
    `${h.length} ops: ${countType(h, 'ok')} ok, ${countType(h, 'fail')} fail, ` +
    `${countType(h, 'info')} info; errors ${JSON.stringify([...load.errors])}\n` +
    `  ops per key ${JSON.stringify([...load.opsPerKey.values()])}`
  );
}

/** Runs the checker and prints how long it took and every violation (as `label: ...`). */
export function checkHistory(label: string, history: readonly HistoryOp[]): LinearizabilityResult {
  const started = nowMs();
  const result = checkLinearizable(history);
  console.log(
    `${label}: checked ${result.keysChecked} keys, ${result.operationsChecked} ops ` +
      `in ${(nowMs() - started).toFixed(0)} ms: ok=${result.ok}`,
  );
  for (const v of result.violations) {
    console.log(`VIOLATION ${v.key}: ${v.message}\n  ${v.ops.map(describeOp).join('\n  ')}`);
  }
  return result;
}
