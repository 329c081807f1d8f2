/**
 * Hands bytes or text to the browser as a file download named `fileName`. The object URL lives
 * long enough for the download to start.
 */
export function saveFile(
  fileName: string,
  content: Uint8Array | string,
  type = "application/octet-stream",
): void {
  const url = URL.createObjectURL(new Blob([content as BlobPart], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = fileName;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A value as a pretty-printed JSON file download. */
export function saveJson(fileName: string, value: unknown): void {
  saveFile(fileName, `${JSON.stringify(value, null, 2)}\n`, "application/json");
}
