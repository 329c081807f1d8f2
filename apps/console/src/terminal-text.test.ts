import { describe, expect, it } from "vitest";
import { inertText } from "./terminal-text.js";

describe("inertText", () => {
  it("shows a clear-screen sequence instead of letting it act", () => {
    expect(inertText("before\x1b[2J\x1b[Hafter")).toBe("before␛[2J␛[Hafter");
  });

  it("neutralises OSC 8 hyperlinks, OSC 52 clipboard writes and title changes", () => {
    const link = "\x1b]8;;http://evil\x07click\x1b]8;;\x07";
    expect(inertText(link)).toBe("␛]8;;http://evil␇click␛]8;;␇");
    expect(inertText("\x1b]52;c;ZXZpbA==\x07")).toBe("␛]52;c;ZXZpbA==␇");
    expect(inertText("\x1b]0;pwned\x1b\\")).toBe("␛]0;pwned␛\\");
  });

  it("shows line breaks, carriage returns, DEL and C1 controls (8-bit CSI and OSC) visibly", () => {
    expect(inertText("a\r\nb\tc\x7f")).toBe("a␍␊b␉c␡");
    expect(inertText("\u009b2J\u009d8;;x\u009c")).toBe("\\x9b2J\\x9d8;;x\\x9c");
  });

  it("leaves printable text alone, non-ASCII included", () => {
    const text = "exit=0 · écrit 42 ✓ 日本語 🙂";
    expect(inertText(text)).toBe(text);
  });

  it("leaves no control character a terminal could act on, whatever the input", () => {
    const every = Array.from({ length: 0x200 }, (_, code) => String.fromCharCode(code)).join("");
    // eslint-disable-next-line no-control-regex -- finding control characters is the point
    expect(inertText(every)).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
  });
});
