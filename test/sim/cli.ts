// npm run sim -- --seeds N [--from S] [--config NAME] [--trace] [--json]
// npm run sim -- --scenario partial-partition [--minutes M] [--json]
//
// Seed s runs configuration s % (number of configurations), unless --config picks one.
// One summary line per configuration; a failing seed prints its violations, the tail of
// its trace and the command that replays it. --trace prints the whole trace live.

import { parseArgs } from 'node:util';
import { configurations, runSeed, type SeedResult, stressConfigurations } from './run.ts';
import { modes, partitions, runPartialPartition, type ScenarioRow } from './scenario.ts';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '100' },
    from: { type: 'string', default: '0' },
    config: { type: 'string' },
    trace: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    scenario: { type: 'string' },
    minutes: { type: 'string', default: '10' },
  },
  strict: true,
});

function positiveInt(name: string, raw: string | undefined, min: number): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    console.error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

function runScenario(): void {
  if (values.scenario !== 'partial-partition') {
    console.error(`unknown --scenario ${values.scenario}; known: partial-partition`);
    process.exit(2);
  }
  const minutes = Number(values.minutes);
  if (!(minutes > 0 && minutes <= 60)) {
    console.error('--minutes must be in (0, 60]');
    process.exit(2);
  }
  const rows: ScenarioRow[] = [];
  if (!values.json) {
    console.log(`partial partition, ${minutes} simulated minutes per row, no other faults`);
    console.log(
      `${'partition'.padEnd(10)}${'mode'.padEnd(10)}${'leader changes'.padStart(16)}` +
        `${'unavailable s'.padStart(16)}${'writes'.padStart(10)}`,
    );
  }
  for (const partition of partitions) {
    for (const mode of modes) {
      const row = runPartialPartition(mode, partition, minutes, 1);
      rows.push(row);
      if (values.json) {
        console.log(
          JSON.stringify({
            mode: row.mode,
            partition: row.partition,
            leader_changes: row.leader_changes,
            unavailable_s: row.unavailable_s,
            writes_committed: row.writes_committed,
            simulated_s: row.simulated_s,
          }),
        );
      } else {
        console.log(
          `${partition.padEnd(10)}${mode.padEnd(10)}${String(row.leader_changes).padStart(16)}` +
            `${String(row.unavailable_s).padStart(16)}${String(row.writes_committed).padStart(10)}`,
        );
      }
    }
  }
  const harpoonBounced = rows.some((r) => r.mode === 'harpoon' && r.leader_changes > 0);
  if (harpoonBounced) {
    console.error('FAIL: Harpoon changed leader under a partial partition');
    process.exit(1);
  }
}

interface Summary {
  seeds: number;
  simulatedMs: number;
  messages: number;
  faults: number;
  crashes: number;
  operations: number;
  localReads: number;
  queuedReads: number;
  /** Runs in which some replica went quiescent; ...UnderFaults: before the cluster settled. */
  quiescedRuns: number;
  quiescedUnderFaultsRuns: number;
  quiesces: number;
  wakes: number;
  lapses: number;
  /** Runs in which a quiescent range elected a new leader after its leader's node lapsed. */
  lapseElectionRuns: number;
  /** ... and after its leader's node crashed. */
  lapseElectionLeaderDownRuns: number;
  splitsRequested: number;
  splitsApplied: number;
  splitsRefused: number;
  rangesAtEnd: number;
  uninitializedCreated: number;
  uninitializedInitialized: number;
  /** Runs in which some replica learned a split by snapshot (its span shrank on install). */
  snapshotSplitRuns: number;
  snapshotSplits: number;
  earlyReplayed: number;
  mismatches: number;
  violations: number;
}

function emptySummary(): Summary {
  return {
    seeds: 0,
    simulatedMs: 0,
    messages: 0,
    faults: 0,
    crashes: 0,
    operations: 0,
    localReads: 0,
    queuedReads: 0,
    quiescedRuns: 0,
    quiescedUnderFaultsRuns: 0,
    quiesces: 0,
    wakes: 0,
    lapses: 0,
    lapseElectionRuns: 0,
    lapseElectionLeaderDownRuns: 0,
    splitsRequested: 0,
    splitsApplied: 0,
    splitsRefused: 0,
    rangesAtEnd: 0,
    uninitializedCreated: 0,
    uninitializedInitialized: 0,
    snapshotSplitRuns: 0,
    snapshotSplits: 0,
    earlyReplayed: 0,
    mismatches: 0,
    violations: 0,
  };
}

function addRun(s: Summary, r: SeedResult): void {
  const t = r.stats;
  addSummary(s, {
    seeds: 1,
    simulatedMs: t.simulatedMs,
    messages: t.messages,
    faults: t.faults,
    crashes: t.crashes,
    operations: r.operations,
    localReads: t.localReads,
    queuedReads: t.queuedReads,
    quiescedRuns: t.quiesces > 0 ? 1 : 0,
    quiescedUnderFaultsRuns: t.quiescesUnderFaults > 0 ? 1 : 0,
    quiesces: t.quiesces,
    wakes: t.wakes,
    lapses: t.lapses,
    lapseElectionRuns: t.lapseElections > 0 ? 1 : 0,
    lapseElectionLeaderDownRuns: t.lapseElectionsLeaderDown > 0 ? 1 : 0,
    splitsRequested: t.splitsRequested,
    splitsApplied: t.splitsApplied,
    splitsRefused: t.splitsRefused,
    rangesAtEnd: t.rangesAtEnd,
    uninitializedCreated: t.uninitializedCreated,
    uninitializedInitialized: t.uninitializedInitialized,
    snapshotSplitRuns: t.snapshotSplits > 0 ? 1 : 0,
    snapshotSplits: t.snapshotSplits,
    earlyReplayed: t.earlyReplayed,
    mismatches: t.mismatches,
    violations: r.violations.length,
  });
}

function addSummary(into: Summary, s: Summary): void {
  for (const k of Object.keys(into) as (keyof Summary)[]) into[k] += s[k];
}

function runSeeds(): void {
  const seeds = positiveInt('seeds', values.seeds, 1);
  const from = positiveInt('from', values.from, 0);
  const all = [...configurations, ...stressConfigurations];
  const fixed = values.config ? all.find((c) => c.name === values.config) : undefined;
  if (values.config && !fixed) {
    console.error(`unknown --config ${values.config}; known: ${all.map((c) => c.name).join(', ')}`);
    process.exit(2);
  }
  const summaries = new Map<string, Summary>();
  const failures: SeedResult[] = [];
  const started = Date.now();
  let lastProgress = started;
  for (let seed = from; seed < from + seeds; seed++) {
    const r = runSeed(seed, fixed, values.trace);
    const name = r.config.name;
    const s = summaries.get(name) ?? emptySummary();
    addRun(s, r);
    summaries.set(name, s);
    if (r.violations.length > 0) {
      failures.push(r);
      reportFailure(r);
    }
    if (!values.json && Date.now() - lastProgress > 10_000) {
      lastProgress = Date.now();
      console.error(`... ${seed - from + 1}/${seeds} seeds, ${failures.length} failing`);
    }
  }
  const total = emptySummary();
  for (const [name, s] of summaries) {
    if (!values.json) {
      console.log(
        `${name.padEnd(20)} seeds=${s.seeds} simulated_s=${(s.simulatedMs / 1000).toFixed(0)} ` +
          `messages=${s.messages} faults=${s.faults} crashes=${s.crashes} ` +
          `operations_checked=${s.operations} local_reads=${s.localReads} ` +
          `queued_reads=${s.queuedReads} violations=${s.violations}`,
      );
      if (s.quiesces > 0) {
        console.log(
          `${''.padEnd(20)} quiesced_runs=${s.quiescedRuns} ` +
            `under_faults=${s.quiescedUnderFaultsRuns} quiesces=${s.quiesces} ` +
            `wakes=${s.wakes} lapses=${s.lapses} lapse_election_runs=${s.lapseElectionRuns} ` +
            `(leader_down=${s.lapseElectionLeaderDownRuns})`,
        );
      }
      if (s.splitsRequested > 0) {
        console.log(
          `${''.padEnd(20)} splits_requested=${s.splitsRequested} applied=${s.splitsApplied} ` +
            `refused=${s.splitsRefused} ranges_at_end=${s.rangesAtEnd} ` +
            `uninitialized_created=${s.uninitializedCreated} ` +
            `initialized=${s.uninitializedInitialized} snapshot_splits=${s.snapshotSplits} ` +
            `(runs=${s.snapshotSplitRuns}) early_replayed=${s.earlyReplayed} ` +
            `mismatches=${s.mismatches}`,
        );
      }
    }
    addSummary(total, s);
  }
  if (values.json) {
    console.log(
      JSON.stringify({
        seeds: total.seeds,
        operations: total.operations,
        local_reads: total.localReads,
        queued_reads: total.queuedReads,
        violations: total.violations,
        quiesced_runs: total.quiescedRuns,
        quiesced_under_faults_runs: total.quiescedUnderFaultsRuns,
        lapse_election_runs: total.lapseElectionRuns,
        splits_applied: total.splitsApplied,
        splits_refused: total.splitsRefused,
        ranges_at_end: total.rangesAtEnd,
        uninitialized_created: total.uninitializedCreated,
        uninitialized_initialized: total.uninitializedInitialized,
        snapshot_splits: total.snapshotSplits,
      }),
    );
  } else {
    console.log(
      `total: ${total.seeds} seeds, ${total.operations} operations checked, ` +
        `${total.violations} violations, ${total.quiescedRuns} runs quiesced ` +
        `(${total.quiescedUnderFaultsRuns} under faults), ` +
        `${total.lapseElectionRuns} elected a leader after a lapse ` +
        `(${total.lapseElectionLeaderDownRuns} after a crash), ` +
        `${total.splitsApplied} splits applied (${total.splitsRefused} refused), ` +
        `${total.uninitializedCreated} uninitialized replicas ` +
        `(${total.uninitializedInitialized} initialized), ` +
        `${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
  }
  if (failures.length > 0) process.exit(1);
}

function reportFailure(r: SeedResult): void {
  const out = values.json ? console.error : console.log;
  out(`\nFAIL seed ${r.seed} (${r.config.name}):`);
  for (const v of r.violations) out(`  [${v.checker}] at ${v.atMs.toFixed(3)} ms: ${v.message}`);
  if (!values.trace) {
    out('  last trace lines:');
    for (const line of r.trace.slice(-40)) out(`    ${line}`);
  }
  const config = values.config ? ` --config ${values.config}` : '';
  out(`  replay: npm run sim --${config} --seeds 1 --from ${r.seed} --trace\n`);
}

if (values.scenario) runScenario();
else runSeeds();
