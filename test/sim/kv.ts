// The simulator's replicated state machine: a string key-value map with the client
// semantics of DESIGN.md (cas returns the current value, del the last value) and a
// replicated record of applied request ids, so a retried write applies once.

export type Command =
  | { readonly op: 'set'; readonly key: string; readonly value: string; readonly requestId: string }
  | {
      readonly op: 'cas';
      readonly key: string;
      readonly expect: string | null;
      readonly value: string;
      readonly requestId: string;
    }
  | { readonly op: 'del'; readonly key: string; readonly requestId: string };

export type CommandResult =
  | { readonly op: 'set' }
  | { readonly op: 'cas'; readonly success: boolean; readonly value: string | null }
  | { readonly op: 'del'; readonly value: string | null };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeCommand(cmd: Command): Uint8Array {
  return encoder.encode(JSON.stringify(cmd));
}

export function decodeCommand(data: Uint8Array): Command {
  return JSON.parse(decoder.decode(data)) as Command;
}

export class KvStateMachine {
  readonly data = new Map<string, string>();
  /** requestId -> the first outcome; kept for the whole run (runs are short). */
  readonly applied = new Map<string, CommandResult>();
  appliedIndex = 0;

  apply(index: number, cmd: Command): CommandResult {
    this.appliedIndex = index;
    const seen = this.applied.get(cmd.requestId);
    if (seen) return seen;
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
    this.applied.set(cmd.requestId, result);
    return result;
  }

  encode(): Uint8Array {
    return encoder.encode(
      JSON.stringify({ i: this.appliedIndex, d: [...this.data], a: [...this.applied] }),
    );
  }

  static decode(bytes: Uint8Array): KvStateMachine {
    const raw = JSON.parse(decoder.decode(bytes)) as {
      i: number;
      d: [string, string][];
      a: [string, CommandResult][];
    };
    const kv = new KvStateMachine();
    kv.appliedIndex = raw.i;
    for (const [k, v] of raw.d) kv.data.set(k, v);
    for (const [k, v] of raw.a) kv.applied.set(k, v);
    return kv;
  }

  clone(): KvStateMachine {
    const kv = new KvStateMachine();
    kv.appliedIndex = this.appliedIndex;
    for (const [k, v] of this.data) kv.data.set(k, v);
    for (const [k, v] of this.applied) kv.applied.set(k, v);
    return kv;
  }

  /** A digest of the user data, to compare replicas. */
  digest(): string {
    return JSON.stringify([...this.data].sort((a, b) => (a[0] < b[0] ? -1 : 1)));
  }
}
