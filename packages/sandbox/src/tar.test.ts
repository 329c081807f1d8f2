import { describe, expect, it } from "vitest";
import { TarFormatError, readTar, unsafeTarEntry, writeTar } from "./tar.js";

function header(name: string, sizeField: string, magic = "ustar\0"): Uint8Array {
  const block = new Uint8Array(512);
  const put = (offset: number, text: string) => block.set(new TextEncoder().encode(text), offset);
  put(0, name);
  put(100, "0000644\0");
  put(124, sizeField);
  put(156, "0");
  put(257, magic);
  block.fill(32, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  put(148, `${sum.toString(8).padStart(6, "0")}\0 `);
  return block;
}

describe("readTar", () => {
  it("round-trips what writeTar wrote, long names included", () => {
    const long = `${"d/".repeat(60)}file.txt`;
    const entries = readTar(
      writeTar([
        {
          name: long,
          type: "file",
          mode: 0o644,
          linkName: "",
          data: new TextEncoder().encode("x"),
        },
      ]),
    );
    expect(entries.map((e) => [e.name, e.type, new TextDecoder().decode(e.data)])).toEqual([
      [long, "file", "x"],
    ]);
  });

  it("refuses a negative entry size instead of looping on the same header forever", () => {
    const archive = new Uint8Array(2048);
    archive.set(header("a", "-000001000\0"), 0);
    expect(() => readTar(archive)).toThrow(TarFormatError);
  });

  it("reads a pax path whose value holds a newline whole, so the check sees what tar sees", () => {
    const value = "ok\n/../../etc/evil";
    const record = ` path=${value}\n`;
    let length = record.length + 2;
    if (String(length).length + record.length !== length)
      length = String(length).length + record.length;
    const pax = new TextEncoder().encode(`${length}${record}`);
    const paxHeader = header("pax", `${pax.length.toString(8).padStart(11, "0")}\0`);
    paxHeader[156] = "x".charCodeAt(0);
    let sum = 0;
    paxHeader.fill(32, 148, 156);
    for (const b of paxHeader) sum += b;
    paxHeader.set(new TextEncoder().encode(`${sum.toString(8).padStart(6, "0")}\0 `), 148);
    const body = new Uint8Array(512);
    body.set(pax);
    const archive = new Uint8Array([
      ...paxHeader,
      ...body,
      ...header("plain", "00000000000\0"),
      ...new Uint8Array(1024),
    ]);
    const [entry] = readTar(archive);
    expect(entry?.name).toBe(value);
    expect(unsafeTarEntry(entry!)).toMatch(/climbs out/);
  });

  it("ignores the ustar prefix field in old GNU headers, as GNU tar does", () => {
    const block = header("a", "00000000000\0", "ustar  \0");
    block.set(new TextEncoder().encode("/etc"), 345);
    block.fill(32, 148, 156);
    let sum = 0;
    for (const b of block) sum += b;
    block.set(new TextEncoder().encode(`${sum.toString(8).padStart(6, "0")}\0 `), 148);
    const [entry] = readTar(new Uint8Array([...block, ...new Uint8Array(1024)]));
    expect(entry?.name).toBe("a");
  });
});
