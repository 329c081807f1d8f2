// @ts-check
/**
 * The interrupt buffer handed to Pyodide, made safe against a lost interrupt.
 *
 * CPython's Emscripten signal check (`_Py_CheckEmscriptenSignals_Helper`, run every 50 eval-breaker
 * checks) consumes the buffer in two plain steps: `result = buffer[0]; buffer[0] = 0`. The flag is
 * written by another thread (the worker's main thread, when the backend asks for an interrupt): a
 * store that lands between those two steps is overwritten by the clear, the interrupt is lost, and
 * guest code in a loop runs on until the backend kills the worker, taking the interpreter's state
 * with it. It happens once in a few dozen interrupts, more often while the check still runs in
 * V8's slower tiers (right after a start, as from a memory snapshot).
 *
 * The view returned here keeps the two steps but makes the clear conditional: it clears only the
 * value the read returned (`Atomics.compareExchange`), so a signal stored after the read stays for
 * the next check. Reads are atomic loads, so Pyodide's own `checkInterrupt` still sees the flag.
 *
 * @param {Int32Array} flag the shared flag (0: none, 2: SIGINT) the main thread stores into
 * @returns {{ 0: number }} what to set as `Module.Py_EmscriptenSignalBuffer`
 */
export function interruptBuffer(flag) {
  let lastRead = 0;
  return {
    get 0() {
      lastRead = Atomics.load(flag, 0);
      return lastRead;
    },
    set 0(value) {
      if (value === 0) Atomics.compareExchange(flag, 0, lastRead, 0);
      else Atomics.store(flag, 0, value);
    },
  };
}
