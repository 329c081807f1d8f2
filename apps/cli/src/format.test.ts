import { describe, expect, it } from "vitest";
import type { PendingApproval } from "@l1fe/shells";
import {
  formatAge,
  formatBytes,
  formatKeyValues,
  formatMode,
  formatPendingApproval,
  formatTable,
  formatTimeUntil,
  maskSecret,
} from "./format.js";

describe("formatTable", () => {
  it("aligns columns under upper-case headers without trailing blanks", () => {
    const table = formatTable(
      ["id", "status", "note"],
      [
        ["sh-1", "running", ""],
        ["sh-long-id", "stopped", "ttl"],
      ],
    );
    expect(table.split("\n")).toEqual([
      "ID          STATUS   NOTE",
      "sh-1        running",
      "sh-long-id  stopped  ttl",
    ]);
  });
});

describe("formatKeyValues", () => {
  it("aligns values after the longest label", () => {
    expect(
      formatKeyValues([
        ["id", "sh-1"],
        ["status", "running"],
      ]),
    ).toBe("id      sh-1\nstatus  running");
  });
});

describe("formatAge", () => {
  const now = Date.parse("2025-06-01T12:00:00Z");
  it.each([
    ["2025-06-01T11:59:55Z", "5s"],
    ["2025-06-01T11:58:30Z", "90s"],
    ["2025-06-01T11:15:00Z", "45m"],
    ["2025-06-01T06:00:00Z", "6h"],
    ["2025-05-25T12:00:00Z", "7d"],
    ["2022-06-01T12:00:00Z", "3y"],
  ])("reads %s as %s ago", (time, age) => {
    expect(formatAge(time, now)).toBe(age);
  });

  it("reads a time slightly in the future (clock skew) as 0s", () => {
    expect(formatAge("2025-06-01T12:00:03Z", now)).toBe("0s");
  });

  it("reads an unparseable time as ?", () => {
    expect(formatAge("yesterday", now)).toBe("?");
  });
});

describe("formatBytes", () => {
  it.each([
    [0, "0 B"],
    [1023, "1023 B"],
    [1536, "1.5 KiB"],
    [20 * 1024 * 1024, "20 MiB"],
  ])("writes %i as %s", (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe("formatTimeUntil", () => {
  const now = Date.parse("2025-06-01T12:00:00Z");
  it.each([
    ["2025-06-01T12:00:30Z", "30s"],
    ["2025-06-01T12:59:59Z", "60m"],
    ["2025-06-02T11:59:59Z", "24h"],
    ["2025-06-08T12:00:00Z", "7d"],
    ["2025-06-01T11:00:00Z", "0s"],
  ])("reads %s as in %s", (time, span) => {
    expect(formatTimeUntil(time, now)).toBe(span);
  });
});

describe("formatPendingApproval", () => {
  it("names the approval, its expiry and the command an approver runs", () => {
    const pending: PendingApproval = {
      status: "pending_approval",
      message: "wipe_state on demo waits for an approver (approval apr-1).",
      approval: {
        id: "apr-1",
        shellId: "sh-1",
        action: "wipe_state",
        state: "pending",
        requestedBy: { type: "user", id: "usr-dev" },
        decidedBy: null,
        reason: null,
        outcome: null,
        createdAt: "2025-06-01T12:00:00.000Z",
        expiresAt: "2025-06-02T12:00:00.000Z",
        decidedAt: null,
      },
    };
    expect(formatPendingApproval(pending, Date.parse("2025-06-01T12:00:00Z")).split("\n")).toEqual([
      "pending approval: wipe_state on demo waits for an approver (approval apr-1).",
      "approval  apr-1",
      "action    wipe_state",
      "shell     sh-1",
      "expires   2025-06-02T12:00:00.000Z (in 24h)",
      'next: ask an approver: shells approvals grant apr-1 --reason "…"',
    ]);
  });
});

describe("maskSecret", () => {
  it("keeps the type prefix and the last 4 characters of a token, nothing else", () => {
    const token = "sht_Qm9vdHN0cmFwIHRoZSB0ZXJtaW5hbCBhbmQgbW9yZQabcd";
    expect(maskSecret(token)).toBe("sht_…abcd");
    expect(maskSecret(token)).not.toContain(token.slice(4, 12));
  });

  it("masks a secret too short to hide anything whole, and one without a prefix", () => {
    expect(maskSecret("sht_short")).toBe("sht_…");
    expect(maskSecret("abcdefghijklmnopqrstuvwxyz")).toBe("…wxyz");
  });
});

describe("formatMode", () => {
  it("reads permission bits as ls -l does", () => {
    expect(formatMode(0o755)).toBe("rwxr-xr-x");
    expect(formatMode(0o100644)).toBe("rw-r--r--");
  });
});
