/**
 * Choosing among the variants of a matmul form on the machine at hand. Every variant of a form
 * gives the same bits (the same order of accumulation), so the choice is only about speed, and
 * it depends on the CPU: the registers V8 leaves free, the caches, the loop alignment. Rather than
 * guess, each shape large enough to matter is timed in use: its first calls go round the variants
 * (the first rounds warm up the compiled code and are not counted), then the fastest is kept for
 * that shape. Nothing is timed before a model runs, so start-up stays quick, and no choice can
 * change a result. A variant can also be forced.
 *
 * @module
 */

/** Multiply-adds below which a call is not timed (too short to measure): the first variant runs. */
const MIN_MULTIPLY_ADDS = 2_000_000;
/** Rounds over the variants before choosing: the first WARM_ROUNDS are not counted. */
const ROUNDS = 5;
const WARM_ROUNDS = 2;

/** What is known of one shape: every variant's best time so far, or the one chosen. */
interface ShapeTrial {
  calls: number;
  best: number[];
  chosen: number;
}

/** The variant choice of one matmul form (its variant count from the kernel module). */
export class VariantChooser {
  readonly count: number;
  /** A forced variant, or -1 to choose by timing. */
  forced: number;
  readonly #shapes = new Map<string, ShapeTrial>();

  constructor(count: number, forced = -1) {
    this.count = count;
    this.forced = forced;
  }

  /** Runs `call(variant)` for a product of M x K x N, timing it while the shape is on trial. */
  run(M: number, K: number, N: number, call: (variant: number) => void): void {
    if (this.forced >= 0) return call(this.forced);
    if (this.count <= 1 || M * K * N < MIN_MULTIPLY_ADDS) return call(0);
    const key = `${M}x${K}x${N}`;
    let trial = this.#shapes.get(key);
    if (trial === undefined) {
      trial = { calls: 0, best: new Array(this.count).fill(Infinity), chosen: -1 };
      this.#shapes.set(key, trial);
    }
    if (trial.chosen >= 0) return call(trial.chosen);
    const variant = trial.calls % this.count;
    const t0 = performance.now();
    call(variant);
    const ms = performance.now() - t0;
    if (trial.calls >= WARM_ROUNDS * this.count) {
      trial.best[variant] = Math.min(trial.best[variant], ms);
    }
    if (++trial.calls === ROUNDS * this.count) {
      trial.chosen = trial.best.indexOf(Math.min(...trial.best));
    }
  }

  /** The variant chosen for each shape decided so far, as "MxKxN": variant. */
  choices(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [key, trial] of this.#shapes) if (trial.chosen >= 0) out[key] = trial.chosen;
    return out;
  }
}
