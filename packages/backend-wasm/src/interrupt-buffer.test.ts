import { describe, expect, it } from "vitest";

const { interruptBuffer } = (await import(
  new URL("../worker/interrupt-buffer.mjs", import.meta.url).href
)) as { interruptBuffer: (flag: Int32Array) => { 0: number } };

/** One pass of CPython's Emscripten signal check: `result = buffer[0]; buffer[0] = 0`. */
function check(buffer: { 0: number }, between: () => void = () => undefined): number {
  const result = buffer[0];
  between();
  buffer[0] = 0;
  return result;
}

describe("the interrupt buffer Pyodide polls", () => {
  it("keeps an interrupt stored between the check's read of the flag and its clear", () => {
    const flag = new Int32Array(new SharedArrayBuffer(4));
    const buffer = interruptBuffer(flag);
    // The main thread's store lands just after the read: this check sees nothing...
    expect(check(buffer, () => Atomics.store(flag, 0, 2))).toBe(0);
    // ...and the interrupt is still there for the next one, which consumes it once.
    expect(Atomics.load(flag, 0)).toBe(2);
    expect(check(buffer)).toBe(2);
    expect(check(buffer)).toBe(0);
  });

  it("clears what the check read and shows the flag to Pyodide's own checkInterrupt", () => {
    const flag = new Int32Array(new SharedArrayBuffer(4));
    const buffer = interruptBuffer(flag);
    Atomics.store(flag, 0, 2);
    expect(buffer[0]).toBe(2); // a read alone (checkInterrupt) leaves the flag set
    expect(Atomics.load(flag, 0)).toBe(2);
    expect(check(buffer)).toBe(2);
    expect(Atomics.load(flag, 0)).toBe(0);
  });
});
