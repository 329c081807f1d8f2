import type {
  ActivityEvent,
  Language,
  NetworkMode,
  Run,
  RunCreate as RunCreateBody,
  RunFrame,
  RuntimeAvailability,
  RuntimeClass,
} from "@l1fe/shells";
import { RunCreate } from "@shells/contract";
import { useEffect, useRef, useState, type FormEvent } from "react";
import { AllowlistEditor, egressOf } from "./allowlist-editor.js";
import { saveFile, saveJson } from "./download.js";
import { Issues, issuesOf } from "./form-dialog.js";
import { RunDiff } from "./run-diff.js";
import { RunReviewPanel } from "./run-review.js";
import { canControl, canCreate, type Session } from "./session.js";
import { inertText } from "./terminal-text.js";
import { usePoll } from "./use-poll.js";
import {
  Button,
  ErrorNote,
  Field,
  Panel,
  StatusBadge,
  Table,
  Tag,
  fieldClass,
  when,
} from "./ui.js";

const LANGUAGES: Language[] = ["python", "node", "bash", "rust", "go"];
const NETWORKS: NetworkMode[] = ["sealed", "localhost", "internet"];
const SAMPLES: Partial<Record<Language, string>> = {
  python: 'print("hello from a run")\nshells.result({"answer": 42})\n',
  node: 'console.log("hello from a run");\nshells.result({ answer: 42 });\n',
  bash: 'echo "hello from a run"\necho \'{"answer": 42}\' > "$SHELLS_RESULT"\n',
};

/**
 * One-shot runs: launch one (language, code, network and egress), watch its live output beside its
 * audit trail (the run's activity events: its start, the shell's creation, egress decisions, its
 * finish), then read its result, the end of its output and its artifacts.
 */
export function RunsPage({
  session,
  openRunId,
  onOpenRun,
}: {
  session: Session;
  openRunId: string | null;
  onOpenRun: (id: string | null) => void;
}) {
  const runs = usePoll(() => session.client.runs.list({ limit: 20 }), 3000);
  return (
    <div className="space-y-6">
      {canCreate(session.principal) && (
        <LaunchPanel
          session={session}
          onLaunched={(id) => {
            runs.refresh();
            onOpenRun(id);
          }}
        />
      )}
      {openRunId !== null && (
        <RunView
          key={openRunId}
          session={session}
          runId={openRunId}
          onChanged={runs.refresh}
          onClose={() => onOpenRun(null)}
        />
      )}
      <Panel title="Runs">
        <ErrorNote error={runs.error} />
        <Table
          label="Runs"
          headers={["Run", "Status", "Language", "Runtime", "Exit", "Started", ""]}
          empty="No runs yet."
          rows={runs.data?.map((run) => [
            <span className="font-mono text-xs">{run.id}</span>,
            <StatusBadge status={run.status} />,
            <Tag>{run.language}</Tag>,
            run.runtime,
            <span className="tabular-nums">{run.exitCode ?? "—"}</span>,
            when(run.createdAt),
            <Button variant="ghost" aria-label={`Open ${run.id}`} onClick={() => onOpenRun(run.id)}>
              Open
            </Button>,
          ])}
        />
      </Panel>
    </div>
  );
}

function LaunchPanel({
  session,
  onLaunched,
}: {
  session: Session;
  onLaunched: (runId: string) => void;
}) {
  const { client } = session;
  const [runtimes, setRuntimes] = useState<RuntimeAvailability[] | null>(null);
  const [language, setLanguage] = useState<Language>("python");
  const [runtime, setRuntime] = useState<RuntimeClass>("container");
  const [network, setNetwork] = useState<NetworkMode>("sealed");
  const [allow, setAllow] = useState<string[]>([]);
  const [code, setCode] = useState(SAMPLES.python ?? "");
  const [artifacts, setArtifacts] = useState("");
  const [issues, setIssues] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    client.runtimes().then(setRuntimes, setError);
  }, [client]);
  const usable = runtimes?.filter((r) => r.available) ?? [];
  const offered = (mode: NetworkMode) =>
    runtimes?.find((r) => r.runtime === runtime)?.networks?.includes(mode) ?? true;

  const chooseLanguage = (next: Language) => {
    // Swap the sample only while the code is still the previous language's sample.
    if (code === (SAMPLES[language] ?? "")) setCode(SAMPLES[next] ?? "");
    setLanguage(next);
  };

  const launch = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    const globs = artifacts.split(/[\s,]+/).filter(Boolean);
    const body: RunCreateBody = {
      language,
      runtime,
      code,
      // Internet with a list is narrowed to it; without one it reaches what the org allows.
      ...(network === "internet" && allow.length > 0 ? { egress: egressOf(allow) } : { network }),
      ...(globs.length > 0 ? { artifacts: globs } : {}),
    };
    const parsed = RunCreate.safeParse(body);
    setIssues(parsed.success ? [] : issuesOf(parsed.error));
    if (!parsed.success) return;
    setBusy(true);
    try {
      onLaunched((await client.runs.create(body)).id);
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };

  const select = <T extends string>(
    label: string,
    value: T,
    options: readonly T[],
    onChange: (value: T) => void,
    enabled: (option: T) => boolean = () => true,
  ) => (
    <Field label={label}>
      <select
        aria-label={label}
        value={value}
        onChange={(event) => onChange(event.target.value as T)}
        className={fieldClass}
      >
        {options.map((option) => (
          <option key={option} value={option} disabled={!enabled(option)}>
            {option}
          </option>
        ))}
      </select>
    </Field>
  );

  return (
    <Panel title="Launch a run">
      <form
        onSubmit={(event) => void launch(event)}
        className="space-y-4 p-4"
        aria-label="Launch a run"
      >
        <div className="grid gap-4 sm:grid-cols-4">
          {select("Language", language, LANGUAGES, chooseLanguage)}
          {select(
            "Runtime",
            runtime,
            ["wasm", "container", "microvm"] as RuntimeClass[],
            (next) => {
              setRuntime(next);
              const modes = runtimes?.find((r) => r.runtime === next)?.networks;
              if (modes && !modes.includes(network)) setNetwork("sealed");
            },
            (option) => runtimes === null || usable.some((r) => r.runtime === option),
          )}
          {select("Network", network, NETWORKS, setNetwork, offered)}
          <Field label="Artifacts">
            <input
              aria-label="Artifacts"
              value={artifacts}
              onChange={(event) => setArtifacts(event.target.value)}
              placeholder="out/*.csv, report.txt"
              autoComplete="off"
              className={`${fieldClass} font-mono`}
            />
          </Field>
        </div>
        {network === "internet" && (
          <div className="space-y-1.5">
            <p className="text-sm font-medium">Allowed destinations</p>
            <AllowlistEditor value={allow} onChange={setAllow} />
          </div>
        )}
        <Field label="Code">
          <textarea
            aria-label="Code"
            value={code}
            onChange={(event) => setCode(event.target.value)}
            rows={7}
            spellCheck={false}
            className={`${fieldClass} font-mono text-xs`}
          />
        </Field>
        <p className="text-xs text-zinc-500 dark:text-zinc-400">
          In python and node, <span className="font-mono">shells.result(value)</span> reports a
          result and <span className="font-mono">shells.artifact(path)</span> keeps a file; any
          language can write JSON to <span className="font-mono">$SHELLS_RESULT</span>.
        </p>
        <Issues issues={issues} />
        <ErrorNote error={error} />
        <div className="flex justify-end">
          <Button type="submit" variant="primary" disabled={busy || !code.trim()}>
            {busy ? "Launching…" : "Launch run"}
          </Button>
        </div>
      </form>
    </Panel>
  );
}

/**
 * Sandbox output as page text: lines and tabs stay, every other control character is shown as its
 * visible stand-in (an escape sequence is text here, and reads as one).
 */
function outputText(text: string): string {
  return text.replace(/[^\n\t]+/g, inertText);
}

/** A frame as text of the output pane: output as written, other frames as one dim line each. */
function frameText(frame: RunFrame): string {
  if (frame.type === "stdout" || frame.type === "stderr") return outputText(String(frame.data));
  return `[${frame.type}] ${inertText(JSON.stringify(frame.data))}\n`;
}

/** The output stream and the audit trail side by side, then the result, output tail and artifacts. */
function RunView({
  session,
  runId,
  onChanged,
  onClose,
}: {
  session: Session;
  runId: string;
  onChanged: () => void;
  onClose: () => void;
}) {
  const { client } = session;
  const handle = client.runs.handle(runId);
  const [frames, setFrames] = useState<RunFrame[]>([]);
  const [streamError, setStreamError] = useState<unknown>(null);
  const [ended, setEnded] = useState(false);
  const [run, setRun] = useState<Run | null>(null);
  const [events, setEvents] = useState<ActivityEvent[]>([]);
  const [error, setError] = useState<unknown>(null);
  const outputRef = useRef<HTMLPreElement>(null);

  // Follow the stream from its first frame until the exit frame (the SDK resumes a dropped one).
  useEffect(() => {
    const abort = new AbortController();
    void (async () => {
      try {
        for await (const frame of client.runs.handle(runId).stream({ signal: abort.signal }))
          setFrames((list) => [...list, frame]);
        if (!abort.signal.aborted) setEnded(true);
      } catch (caught) {
        if (!abort.signal.aborted) setStreamError(caught);
      }
    })();
    return () => abort.abort();
  }, [client, runId]);

  // The run and its audit, polled while it runs and read once more when it has ended.
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      try {
        const item = client.runs.handle(runId);
        const [current, audit] = await Promise.all([item.get(), item.audit()]);
        if (stopped) return;
        setRun(current);
        setEvents(audit);
        setError(null);
        if (current.status !== "running") {
          onChanged();
          return;
        }
      } catch (caught) {
        if (!stopped) setError(caught);
      }
      if (!stopped) timer = setTimeout(() => void poll(), 1000);
    };
    void poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
    // `ended` re-reads the run once its stream closes, so the result shows without waiting.
  }, [client, runId, ended, onChanged]);

  useEffect(() => {
    const pane = outputRef.current;
    if (pane) pane.scrollTop = pane.scrollHeight;
  }, [frames]);

  const download = async (path: string) => {
    try {
      saveFile(path.split("/").pop() ?? "artifact", await handle.artifact(path));
    } catch (caught) {
      setError(caught);
    }
  };

  // The bundle proves the run's events against a signed checkpoint; `shells evidence verify`
  // checks the file with no server.
  const downloadEvidence = async () => {
    try {
      saveJson(`evidence-${runId}.json`, await handle.evidence());
    } catch (caught) {
      setError(caught);
    }
  };

  const teardown = async () => {
    try {
      setRun(await handle.teardown());
      onChanged();
    } catch (caught) {
      setError(caught);
    }
  };

  const finished = run !== null && run.status !== "running";
  return (
    <section
      aria-label={`Run ${runId}`}
      className="rounded-xl border border-zinc-200 bg-white shadow-xs dark:border-zinc-800 dark:bg-zinc-900"
    >
      <header className="flex items-center justify-between gap-4 border-b border-zinc-200 px-4 py-3 dark:border-zinc-800">
        <div className="flex items-center gap-3">
          <h2 className="text-sm font-semibold">Run</h2>
          <span className="font-mono text-xs text-zinc-500">{runId}</span>
          {run && <StatusBadge status={run.status} />}
        </div>
        <div className="flex gap-2">
          {finished && (
            <Button
              onClick={() => void downloadEvidence()}
              title="The run's record and events with inclusion proofs against a signed checkpoint"
            >
              Evidence bundle
            </Button>
          )}
          {canControl(session.principal) && run && (
            <Button onClick={() => void teardown()}>
              {run.status === "running" ? "Cancel" : "Tear down"}
            </Button>
          )}
          <Button variant="ghost" aria-label="Close run" onClick={onClose}>
            ✕
          </Button>
        </div>
      </header>
      <div className="space-y-4 p-4">
        <ErrorNote error={error ?? streamError} />
        <div className="grid gap-4 lg:grid-cols-2">
          <div>
            <h3 className="mb-1.5 text-sm font-semibold">Output</h3>
            <pre
              ref={outputRef}
              data-testid="run-output"
              className="h-72 overflow-auto rounded-lg bg-zinc-950 p-3 font-mono text-xs whitespace-pre-wrap text-zinc-100"
            >
              {frames.map((frame) => (
                <span
                  key={frame.seq}
                  className={
                    frame.type === "stderr"
                      ? "text-red-400"
                      : frame.type === "stdout"
                        ? ""
                        : "text-zinc-500"
                  }
                >
                  {frameText(frame)}
                </span>
              ))}
              {!ended && <span className="animate-pulse text-zinc-500">▍</span>}
            </pre>
          </div>
          <div>
            <h3 className="mb-1.5 text-sm font-semibold">Audit</h3>
            <ol
              data-testid="run-audit"
              className="h-72 space-y-1 overflow-auto rounded-lg bg-zinc-950 p-3 font-mono text-xs text-zinc-100"
            >
              {events.map((event) => (
                <li key={event.seq}>
                  <span className="text-zinc-500">
                    {new Date(event.time).toLocaleTimeString([], { hour12: false })}
                  </span>{" "}
                  <span
                    className={
                      event.outcome === "success"
                        ? "text-emerald-400"
                        : event.outcome === "denied"
                          ? "text-amber-300"
                          : "text-red-400"
                    }
                  >
                    {event.outcome}
                  </span>{" "}
                  <span className="font-semibold">{inertText(event.action)}</span>{" "}
                  <span className="text-zinc-400">{inertText(summary(event))}</span>
                </li>
              ))}
            </ol>
          </div>
        </div>
        {finished && <RunOutcome run={run} onDownload={(path) => void download(path)} />}
        {finished && <RunDiff run={run} client={client} />}
        {finished && run.status !== "pending_approval" && (
          <RunReviewPanel
            session={session}
            run={run}
            onReviewed={() => void handle.get().then(setRun, setError)}
          />
        )}
      </div>
    </section>
  );
}

/** A few scalar details of an event (`host=… reason=…`), enough to read a decision at a glance. */
function summary(event: ActivityEvent): string {
  return Object.entries(event.details)
    .filter(([, value]) => value !== null && typeof value !== "object")
    .slice(0, 5)
    .map(([key, value]) => `${key}=${String(value)}`)
    .join(" ");
}

function RunOutcome({ run, onDownload }: { run: Run; onDownload: (path: string) => void }) {
  const seconds =
    run.finishedAt !== null
      ? ((Date.parse(run.finishedAt) - Date.parse(run.createdAt)) / 1000).toFixed(1)
      : null;
  return (
    <div className="grid gap-4 lg:grid-cols-2" aria-label="Run result">
      <div className="space-y-3">
        <dl className="grid grid-cols-[auto_1fr] gap-x-4 gap-y-1.5 text-sm">
          <dt className="text-zinc-500">Exit code</dt>
          <dd className="font-mono" data-testid="run-exit-code">
            {run.exitCode ?? "—"}
          </dd>
          <dt className="text-zinc-500">Kill reason</dt>
          <dd className="font-mono">{run.killReason ?? "—"}</dd>
          <dt className="text-zinc-500">Took</dt>
          <dd className="font-mono">{seconds ? `${seconds} s` : "—"}</dd>
          {run.error && (
            <>
              <dt className="text-zinc-500">Error</dt>
              <dd className="text-red-600 dark:text-red-400">{run.error}</dd>
            </>
          )}
        </dl>
        <div>
          <h3 className="mb-1.5 text-sm font-semibold">Result</h3>
          <pre
            data-testid="run-result"
            className="overflow-auto rounded-lg border border-zinc-200 p-3 font-mono text-xs dark:border-zinc-800"
          >
            {run.result === null ? "No structured result." : JSON.stringify(run.result, null, 2)}
          </pre>
        </div>
        <div>
          <h3 className="mb-1.5 text-sm font-semibold">Artifacts</h3>
          {run.artifacts.length === 0 && (
            <p className="text-sm text-zinc-500 dark:text-zinc-400">None kept.</p>
          )}
          <ul className="space-y-1">
            {run.artifacts.map((artifact) => (
              <li key={artifact.path} className="flex items-center gap-3 text-sm">
                <span className="font-mono text-xs">{artifact.path}</span>
                <span className="text-xs text-zinc-500 tabular-nums">
                  {artifact.sizeBytes} bytes
                </span>
                {!run.expiredAt && (
                  <Button
                    variant="ghost"
                    aria-label={`Download ${artifact.path}`}
                    onClick={() => onDownload(artifact.path)}
                  >
                    Download
                  </Button>
                )}
              </li>
            ))}
            {run.expiredAt && (
              <li className="text-xs text-zinc-500 dark:text-zinc-400">
                Removed by retention on {run.expiredAt}; the manifest and hashes stay.
              </li>
            )}
            {run.skippedArtifacts?.map((skipped) => (
              <li key={skipped.path} className="text-xs text-amber-700 dark:text-amber-300">
                <span className="font-mono">{skipped.path}</span> not kept: {skipped.reason}
              </li>
            ))}
          </ul>
        </div>
      </div>
      <div>
        <h3 className="mb-1.5 text-sm font-semibold">Output tail</h3>
        {run.output === null ? (
          <p className="text-sm text-zinc-500 dark:text-zinc-400">Not recorded for this run.</p>
        ) : (
          <pre
            data-testid="run-output-tail"
            className="max-h-72 overflow-auto rounded-lg border border-zinc-200 p-3 font-mono text-xs whitespace-pre-wrap dark:border-zinc-800"
          >
            {outputText(run.output.stdout)}
            {run.output.stderr && (
              <span className="text-red-600 dark:text-red-400">
                {outputText(run.output.stderr)}
              </span>
            )}
            <span className="block pt-2 text-zinc-500">
              stdout {run.output.stdoutBytes} bytes · stderr {run.output.stderrBytes} bytes
            </span>
          </pre>
        )}
      </div>
    </div>
  );
}
