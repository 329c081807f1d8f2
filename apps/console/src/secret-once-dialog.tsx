import { useState, type ReactNode } from "react";
import { Button, Dialog } from "./ui.js";

/**
 * A secret the API answers one time only (a new API key's token, a signing secret). It lives in
 * this dialog's props only: once closed, nothing in the page or the browser's storage holds it.
 */
export function SecretOnceDialog({
  title,
  secret,
  testId,
  onClose,
  children,
}: {
  title: string;
  secret: string;
  /** `data-testid` of the element showing the secret. */
  testId: string;
  onClose: () => void;
  /** What the secret is for and where to keep it. */
  children: ReactNode;
}) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(secret);
      setCopied(true);
    } catch {
      setCopied(false); // No clipboard (insecure context): the secret stays selectable.
    }
  };
  return (
    <Dialog open onClose={onClose} title={title}>
      <div className="space-y-4">
        <p className="text-sm text-zinc-600 dark:text-zinc-300">{children}</p>
        <div className="flex items-center gap-2">
          <code
            data-testid={testId}
            className="min-w-0 flex-1 rounded-md border border-zinc-200 bg-zinc-50 px-3 py-2 font-mono text-sm break-all select-all dark:border-zinc-800 dark:bg-zinc-950"
          >
            {secret}
          </code>
          <Button onClick={() => void copy()}>{copied ? "Copied" : "Copy"}</Button>
        </div>
        <div className="flex justify-end border-t border-zinc-200 pt-4 dark:border-zinc-800">
          <Button variant="primary" onClick={onClose}>
            I have stored it
          </Button>
        </div>
      </div>
    </Dialog>
  );
}
