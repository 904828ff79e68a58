/**
 * A small seeded random number generator (xoshiro128**), so that training and sampling are
 * repeatable for a seed. Its whole state is four 32-bit words, saved in checkpoints.
 *
 * @module
 */

/** Seeded PRNG (xoshiro128**) with uniform and normal draws. */
export class Rng {
  /** The generator's state; copy it to save the generator, assign it to restore. */
  readonly state: Uint32Array = new Uint32Array(4);

  /** Seeds the generator from any 53-bit integer with splitmix32. */
  constructor(seed = 0) {
    let s = (seed >>> 0) ^ Math.floor(seed / 0x100000000);
    for (let i = 0; i < 4; i++) {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.state[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  /** A uniform 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.state;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** A uniform float in [0, 1) with 53 random bits. */
  random(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** A uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  /** A normal draw with the given mean and standard deviation (Box-Muller). */
  normal(mean = 0, std = 1): number {
    const u1 = 1 - this.random(); // (0, 1]
    const u2 = this.random();
    return mean + std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

// ---------------------------------------------------------------------------------------------
// Dropout's draws (lib/layers.ts dropoutForward, and the GPU's masks in lib/webgpu/dropout.ts)

/**
 * The seed of a step's dropout masks in a run of `seed`: ((seed + 1) mod 2¹⁵) · 2¹⁶ + step, as
 * the batches are drawn from seed + 1; the masks need nothing saved to resume.
 */
export function dropoutSeed(seed: number, step: number): number {
  return ((seed + 1) % 0x8000) * 0x10000 + step;
}

/** At rate p, a draw (u32) below `threshold` drops its element; a kept one is scaled by `keep`. */
export function dropoutScale(p: number): { threshold: number; keep: number } {
  return { threshold: Math.round(p * 0x100000000), keep: 1 / (1 - p) };
}
