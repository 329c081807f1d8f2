import { describe, expect, it } from "vitest";
import { AppError } from "../errors.js";
import { refuseForeignOrigin, type ServerAddress } from "./origin-check.js";

const loopback: ServerAddress = { host: "127.0.0.1" };
const published: ServerAddress = { host: "0.0.0.0", publicUrl: "https://shells.example.com" };

/** The refusal's message, or "allowed". */
function verdict(host: string | undefined, origin: string | undefined, server: ServerAddress) {
  try {
    refuseForeignOrigin({ host, origin }, server);
    return "allowed";
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe("forbidden");
    return "refused";
  }
}

describe("refuseForeignOrigin", () => {
  it.each([
    ["127.0.0.1:8080", undefined, loopback],
    ["localhost:8080", undefined, loopback],
    ["[::1]:8080", undefined, loopback],
    ["10.0.0.5:8080", undefined, published],
    ["shells.example.com", undefined, published],
    ["myhost:8080", undefined, { host: "myhost" }],
    ["127.0.0.1:8080", "http://127.0.0.1:8080", loopback],
    ["localhost", "http://localhost", loopback],
    ["shells.example.com", "https://shells.example.com", published],
    ["10.0.0.5:8080", "https://shells.example.com", published],
  ])("allows Host %s with Origin %s", (host, origin, server) => {
    expect(verdict(host, origin, server)).toBe("allowed");
  });

  it.each([
    ["evil.example:8080", undefined, loopback],
    ["evil.example:8080", "http://evil.example:8080", loopback],
    ["shells.example.com", undefined, loopback],
    ["myhost:8080", undefined, { host: "0.0.0.0" }],
    [undefined, undefined, loopback],
    ["evil.example@127.0.0.1", undefined, loopback],
    ["127.0.0.1:8080", "http://evil.example", loopback],
    ["127.0.0.1:8080", "http://127.0.0.1:5173", loopback],
    ["127.0.0.1:8080", "http://localhost:8080", loopback],
    ["127.0.0.1:8080", "null", loopback],
    ["127.0.0.1:8080", "file://", loopback],
    ["shells.example.com", "https://evil.example", published],
  ])("refuses Host %s with Origin %s", (host, origin, server) => {
    expect(verdict(host, origin, server)).toBe("refused");
  });
});
