// The simulator's replicated state machine of one range: a string key-value map with the
// client semantics of DESIGN.md (cas returns the current value, del the last value), a
// replicated record of applied request ids (so a retried write applies once), and the
// range's descriptor, which a split command changes (docs/ranges.md, "Split, step by step").
//
// Every check here reads only replicated state, so every replica decides the same: a keyed
// command whose key is outside the span applies as a mismatch and changes nothing; a split
// applies only at the generation it was proposed under and at a key strictly inside the
// span. The request records live with their key, so a split moves the right half's records
// to the new range with its data (the store keys them under the user key).

import { type Descriptor, inSpan, strictlyInside } from './ranges.ts';

export type Command =
  | { readonly op: 'set'; readonly key: string; readonly value: string; readonly requestId: string }
  | {
      readonly op: 'cas';
      readonly key: string;
      readonly expect: string | null;
      readonly value: string;
      readonly requestId: string;
    }
  | { readonly op: 'del'; readonly key: string; readonly requestId: string }
  | {
      readonly op: 'split';
      readonly key: string;
      /** The generation the leader saw when it proposed the split. */
      readonly generation: number;
      /** The new range's id (from the meta range's counter in the node). */
      readonly rightId: number;
    };

export type CommandResult =
  | { readonly op: 'set' }
  | { readonly op: 'cas'; readonly success: boolean; readonly value: string | null }
  | { readonly op: 'del'; readonly value: string | null }
  | { readonly op: 'split'; readonly left: Descriptor; readonly right: Descriptor }
  /** RangeKeyMismatch: the command changed nothing (key outside the span, or a stale split). */
  | { readonly op: 'mismatch'; readonly why: string };

/**
 * Deliberate bugs, to show that the checkers catch them (docs/simulation.md, "Mutations").
 * `applyOutsideSpan`: writes skip the apply-time span check. `recordsStay`: a split leaves
 * the request records of the right half behind.
 */
export interface KvRules {
  readonly applyOutsideSpan: boolean;
  readonly recordsStay: boolean;
}

export const correctRules: KvRules = { applyOutsideSpan: false, recordsStay: false };

interface RequestRecord {
  readonly key: string;
  readonly result: CommandResult;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeCommand(cmd: Command): Uint8Array {
  return encoder.encode(JSON.stringify(cmd));
}

export function decodeCommand(data: Uint8Array): Command {
  return JSON.parse(decoder.decode(data)) as Command;
}

export class KvStateMachine {
  descriptor: Descriptor;
  readonly data = new Map<string, string>();
  /** requestId -> the first outcome; kept for the whole run (runs are short). */
  readonly requests = new Map<string, RequestRecord>();
  appliedIndex = 0;
  private readonly rules: KvRules;

  constructor(descriptor: Descriptor, rules: KvRules) {
    this.descriptor = descriptor;
    this.rules = rules;
  }

  /**
   * Applies the command of the entry at `index`. A split that applies calls `created` with
   * the new range's state machine (at `index`, holding the right half's data and records).
   */
  apply(index: number, cmd: Command, created?: (right: KvStateMachine) => void): CommandResult {
    this.appliedIndex = index;
    if (cmd.op === 'split') return this.split(index, cmd, created);
    const d = this.descriptor;
    if (!inSpan(d, cmd.key) && !this.rules.applyOutsideSpan) {
      return { op: 'mismatch', why: `entry ${index}: ${cmd.key} is outside r${d.rangeId}` };
    }
    const seen = this.requests.get(cmd.requestId);
    if (seen) return seen.result;
    let result: CommandResult;
    switch (cmd.op) {
      case 'set':
        this.data.set(cmd.key, cmd.value);
        result = { op: 'set' };
        break;
      case 'cas': {
        const current = this.data.get(cmd.key) ?? null;
        if (current === cmd.expect) {
          this.data.set(cmd.key, cmd.value);
          result = { op: 'cas', success: true, value: cmd.value };
        } else {
          result = { op: 'cas', success: false, value: current };
        }
        break;
      }
      case 'del': {
        const last = this.data.get(cmd.key) ?? null;
        this.data.delete(cmd.key);
        result = { op: 'del', value: last };
        break;
      }
    }
    this.requests.set(cmd.requestId, { key: cmd.key, result });
    return result;
  }

  private split(
    index: number,
    cmd: Extract<Command, { op: 'split' }>,
    created: ((right: KvStateMachine) => void) | undefined,
  ): CommandResult {
    const d = this.descriptor;
    if (cmd.generation !== d.generation) {
      return {
        op: 'mismatch',
        why: `entry ${index}: split proposed at generation ${cmd.generation}, r${d.rangeId} is at ${d.generation}`,
      };
    }
    if (!strictlyInside(d, cmd.key)) {
      return { op: 'mismatch', why: `entry ${index}: split key ${cmd.key} not strictly inside` };
    }
    const generation = d.generation + 1;
    const left: Descriptor = { ...d, end: cmd.key, generation };
    const right: Descriptor = {
      rangeId: cmd.rightId,
      start: cmd.key,
      end: d.end,
      generation,
      replicas: d.replicas,
    };
    const kv = new KvStateMachine(right, this.rules);
    kv.appliedIndex = index;
    for (const [key, value] of this.data) {
      if (!inSpan(right, key)) continue;
      kv.data.set(key, value);
      this.data.delete(key);
    }
    if (!this.rules.recordsStay) {
      for (const [id, record] of this.requests) {
        if (!inSpan(right, record.key)) continue;
        kv.requests.set(id, record);
        this.requests.delete(id);
      }
    }
    this.descriptor = left;
    created?.(kv);
    return { op: 'split', left, right };
  }

  encode(): Uint8Array {
    return encoder.encode(
      JSON.stringify({
        i: this.appliedIndex,
        desc: this.descriptor,
        d: [...this.data],
        r: [...this.requests],
      }),
    );
  }

  static decode(bytes: Uint8Array, rules: KvRules): KvStateMachine {
    const raw = JSON.parse(decoder.decode(bytes)) as {
      i: number;
      desc: Descriptor;
      d: [string, string][];
      r: [string, RequestRecord][];
    };
    const kv = new KvStateMachine(raw.desc, rules);
    kv.appliedIndex = raw.i;
    for (const [k, v] of raw.d) kv.data.set(k, v);
    for (const [k, v] of raw.r) kv.requests.set(k, v);
    return kv;
  }

  clone(): KvStateMachine {
    const kv = new KvStateMachine(this.descriptor, this.rules);
    kv.appliedIndex = this.appliedIndex;
    for (const [k, v] of this.data) kv.data.set(k, v);
    for (const [k, v] of this.requests) kv.requests.set(k, v);
    return kv;
  }

  /** A digest of the span, the user data and the request records, to compare replicas. */
  digest(): string {
    const byKey = (a: [string, unknown], b: [string, unknown]) => (a[0] < b[0] ? -1 : 1);
    return JSON.stringify([
      this.descriptor,
      [...this.data].sort(byKey),
      [...this.requests].sort(byKey).map(([id, r]) => [id, r.key]),
    ]);
  }
}
