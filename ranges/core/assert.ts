// Assertions catch programmer errors: a broken invariant stops the process, never limps on.

export class InvariantViolation extends Error {
  override name = 'InvariantViolation';
}

export function assert(condition: unknown, invariant: string): asserts condition {
  if (!condition) throw new InvariantViolation(`invariant violated: ${invariant}`);
}
