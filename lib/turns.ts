/**
 * Turns of the event loop during long work (training, evaluation, generation), so that a page
 * repaints and a CLI sees its signals: at most one timer task every 15 ms of work.
 *
 * @module
 */

/**
 * A function to await between units of work: it lets the event loop run (one `setTimeout(0)`)
 * when `everyMs` have passed since it last did, and is otherwise a resolved promise.
 */
export function eventLoopTurns(everyMs = 15): () => Promise<void> {
  let last = performance.now();
  return async () => {
    if (performance.now() - last <= everyMs) return;
    await new Promise((resolve) => setTimeout(resolve, 0));
    last = performance.now();
  };
}
