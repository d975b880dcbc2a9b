// NATS subjects of a cluster (DESIGN.md, "NATS subjects"). The prefix defaults to
// `rasputin` and is configurable per cluster.

export const defaultPrefix = 'rasputin';

/** Node ids and prefixes become subject tokens: keep them to a safe alphabet. */
const tokenPattern = /^[A-Za-z0-9_-]{1,64}$/;
const prefixPattern = /^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,3}$/;

export function checkNodeId(id: string): string | undefined {
  return tokenPattern.test(id)
    ? undefined
    : `node id ${JSON.stringify(id)} must be 1-64 characters of A-Z a-z 0-9 _ -`;
}

export function checkPrefix(prefix: string): string | undefined {
  return prefixPattern.test(prefix)
    ? undefined
    : `prefix ${JSON.stringify(prefix)} must be 1-4 dot-separated tokens of A-Z a-z 0-9 _ -`;
}

export const subjects = {
  /** Batches of consensus messages for one node. */
  raft: (p: string, nodeId: string) => `${p}.raft.${nodeId}`,
  /** Client requests for one range; only its leader subscribes. */
  range: (p: string, rangeId: number) => `${p}.range.${rangeId}`,
  /** Client requests for any node (queue group `kvQueue`); forwarded to the leader. */
  kv: (p: string) => `${p}.kv`,
  /** Every node answers: status of the node and its ranges. */
  adminStatus: (p: string) => `${p}.admin.status`,
  /** The node with that id answers with its store id (duplicate-process detection). */
  adminWhoami: (p: string, nodeId: string) => `${p}.admin.whoami.${nodeId}`,
  /** The node with that id answers with its descriptor of a range (uninitialized replicas). */
  adminRange: (p: string, nodeId: string) => `${p}.admin.range.${nodeId}`,
  /** Range leaders' reports for the placement driver (listened to by the meta leader's node). */
  adminReport: (p: string) => `${p}.admin.report`,
  /** Every node answers: its placement driver's recent decisions (only the active one has any). */
  adminPlacement: (p: string) => `${p}.admin.placement`,
  adminAll: (p: string) => `${p}.admin.>`,
};

export const kvQueue = 'rasputin-kv';
