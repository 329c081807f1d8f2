import type { Checkpoint } from "@l1fe/shells";
import { useState } from "react";
import { saveJson } from "./download.js";
import type { Session } from "./session.js";
import { usePoll } from "./use-poll.js";
import { Button, ErrorNote, Notice, Panel, Table, when } from "./ui.js";

const short = (hex: string) => `${hex.slice(0, 12)}…`;
const fileOf = (checkpoint: Checkpoint) =>
  `checkpoint-${checkpoint.orgId}-${checkpoint.treeSize}.json`;

/**
 * Signed checkpoints of the org's activity history: sign one now and download it, or download an
 * earlier one. A checkpoint kept outside the server later proves, with `shells audit verify
 * --checkpoint FILE`, that nothing it covers was changed, removed or truncated. A run's own
 * evidence bundle is downloaded from its page on Runs.
 */
export function CheckpointsPanel({ session }: { session: Session }) {
  const { client } = session;
  const checkpoints = usePoll(
    async () => (await client.audit.checkpoints({ limit: 20 }).page()).items,
    10_000,
  );
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);

  const signAndDownload = async () => {
    setBusy(true);
    setError(null);
    setNotice(null);
    try {
      const checkpoint = await client.audit.checkpoint();
      saveJson(fileOf(checkpoint), checkpoint);
      setNotice(`Signed checkpoint ${checkpoint.id} over ${checkpoint.treeSize} events.`);
      checkpoints.refresh();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Panel title="Signed checkpoints">
      <div className="flex items-center justify-between gap-4 px-4 py-3">
        <p className="text-sm text-zinc-500 dark:text-zinc-400">
          A checkpoint signs the history&apos;s event count and Merkle root. Keep one outside the
          server: <span className="font-mono">shells audit verify --checkpoint FILE</span> later
          proves the history still begins with exactly those events.
        </p>
        <Button variant="primary" disabled={busy} onClick={() => void signAndDownload()}>
          {busy ? "Signing…" : "Sign & download checkpoint"}
        </Button>
      </div>
      <Notice text={notice} />
      <ErrorNote error={error ?? checkpoints.error} />
      <Table
        label="Checkpoints"
        headers={["Events", "Root", "Signed", "Key", ""]}
        empty="No checkpoint signed yet."
        rows={checkpoints.data?.map((checkpoint) => [
          <span className="tabular-nums">{checkpoint.treeSize}</span>,
          <span className="font-mono text-xs" title={checkpoint.rootHash}>
            {short(checkpoint.rootHash)}
          </span>,
          when(checkpoint.time),
          <span className="font-mono text-xs" title={checkpoint.keyId}>
            {short(checkpoint.keyId)}
          </span>,
          <Button
            variant="ghost"
            aria-label={`Download checkpoint ${checkpoint.id}`}
            onClick={() => saveJson(fileOf(checkpoint), checkpoint)}
          >
            Download
          </Button>,
        ])}
      />
    </Panel>
  );
}
