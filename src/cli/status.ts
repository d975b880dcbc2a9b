// Cluster status by scatter-gather: every node answers `<p>.admin.status`.

import { connect, createInbox } from '@nats-io/transport-node';
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
  lease: boolean;
  replicas: string[];
}

export interface NodeStatus {
  cid: string;
  node: string;
  store: string;
  ranges: RangeStatus[];
}

/** Asks every node for its status; collects answers for `waitMs`. */
export async function collectStatus(
  url: string,
  prefix: string,
  waitMs: number,
): Promise<NodeStatus[]> {
  const nc = await connect({ servers: url, name: 'rasputin-status' });
  try {
    const inbox = createInbox();
    const out: NodeStatus[] = [];
    const sub = nc.subscribe(inbox, {
      callback: (err, msg) => {
        if (err) return;
        try {
          out.push(decode(msg.data) as NodeStatus);
        } catch {
          // not a status reply
        }
      },
    });
    nc.publish(subjects.adminStatus(prefix), encode({ v: protocolVersion }), { reply: inbox });
    await new Promise((r) => setTimeout(r, waitMs));
    sub.unsubscribe();
    return out.sort((a, b) => (a.node < b.node ? -1 : 1));
  } finally {
    await nc.close();
  }
}
