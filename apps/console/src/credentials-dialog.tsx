import type { Shell, TerminalCredential } from "@l1fe/shells";
import type { Terminal } from "@xterm/xterm";
import { useCallback, useEffect, useState } from "react";
import type { Session } from "./session.js";
import { inertText } from "./terminal-text.js";
import { TerminalView } from "./terminal-view.js";
import { useNow } from "./use-poll.js";
import { Button, Dialog, ErrorNote, describeError } from "./ui.js";

function mask(token: string): string {
  return `${token.slice(0, 4)}${"•".repeat(Math.max(8, Math.min(24, token.length - 4)))}`;
}

function countdown(msLeft: number): string {
  if (msLeft <= 0) return "expired";
  const seconds = Math.ceil(msLeft / 1000);
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

/**
 * Term credentials: mint one (short-lived, single-use), shown masked with a reveal toggle, a copy
 * button and a live countdown to its expiry; and an embedded terminal on the shell's PTY, which
 * mints its own credential when it connects (a credential attaches once).
 */
export function CredentialsDialog({
  session,
  shell,
  onClose,
}: {
  session: Session;
  shell: Shell;
  onClose: () => void;
}) {
  const { client } = session;
  const now = useNow(500);
  const [credential, setCredential] = useState<TerminalCredential | null>(null);
  const [mintError, setMintError] = useState<unknown>(null);
  const [revealed, setRevealed] = useState(false);
  const [copied, setCopied] = useState(false);
  const [connection, setConnection] = useState<"idle" | "connecting" | "open" | "closed">("idle");
  const [terminal, setTerminal] = useState<Terminal | null>(null);

  const mint = useCallback(async () => {
    setMintError(null);
    setRevealed(false);
    setCopied(false);
    try {
      setCredential(await client.term(shell.id));
    } catch (error) {
      setMintError(error);
    }
  }, [client, shell.id]);

  useEffect(() => {
    void mint();
  }, [mint]);

  const copy = async () => {
    if (!credential) return;
    try {
      await navigator.clipboard.writeText(credential.token);
      setCopied(true);
    } catch {
      setRevealed(true); // No clipboard (insecure context): show it so it can be selected.
    }
  };

  const onTerminalReady = useCallback((term: Terminal) => {
    setTerminal(term);
    term.writeln("\x1b[2mPress Connect to open a login shell in this sandbox.\x1b[0m");
    return () => setTerminal(null);
  }, []);

  // The live PTY: keystrokes go up the WebSocket, output comes down into xterm.
  const [hangUp, setHangUp] = useState<(() => void) | null>(null);
  const connect = async () => {
    if (!terminal) return;
    setConnection("connecting");
    terminal.reset();
    try {
      const own = await client.term(shell.id);
      const pty = await own.attach({ cols: terminal.cols, rows: terminal.rows });
      setConnection("open");
      setHangUp(() => () => pty.close());
      const input = terminal.onData((data) => pty.write(data));
      const resize = terminal.onResize(({ cols, rows }) => pty.resize(cols, rows));
      terminal.focus();
      for await (const bytes of pty) terminal.write(bytes);
      const closed = await pty.closed;
      input.dispose();
      resize.dispose();
      const why = closed.error ? `${closed.error.code}: ${closed.error.message}` : closed.reason;
      terminal.writeln(
        `\r\n\x1b[2m[disconnected: ${inertText(why || `code ${closed.code}`)}]\x1b[0m`,
      );
    } catch (error) {
      terminal.writeln(`\r\n\x1b[31m${inertText(describeError(error))}\x1b[0m`);
    }
    setConnection("closed");
    setHangUp(null);
  };
  useEffect(() => () => hangUp?.(), [hangUp]);

  const msLeft = credential ? Date.parse(credential.expiresAt) - now : 0;
  return (
    <Dialog open onClose={onClose} title={`Terminal & credentials · ${shell.name}`} wide>
      <div className="space-y-5">
        <section aria-label="Term credential" className="space-y-2">
          <div className="flex items-center justify-between">
            <h3 className="text-sm font-semibold">Term credential</h3>
            <span
              data-testid="credential-countdown"
              className={`rounded-full px-2 py-0.5 font-mono text-xs tabular-nums ${
                msLeft > 60_000
                  ? "bg-emerald-50 text-emerald-700 dark:bg-emerald-500/10 dark:text-emerald-400"
                  : "bg-amber-50 text-amber-700 dark:bg-amber-500/10 dark:text-amber-300"
              }`}
            >
              {credential ? `expires in ${countdown(msLeft)}` : "minting…"}
            </span>
          </div>
          <div className="flex items-center gap-2">
            <code
              data-testid="credential-token"
              className="min-w-0 flex-1 truncate rounded-md border border-zinc-200 bg-zinc-50 px-3 py-2 font-mono text-sm dark:border-zinc-800 dark:bg-zinc-950"
            >
              {credential ? (revealed ? credential.token : mask(credential.token)) : "—"}
            </code>
            <Button onClick={() => setRevealed((r) => !r)} disabled={!credential}>
              {revealed ? "Hide" : "Reveal"}
            </Button>
            <Button onClick={() => void copy()} disabled={!credential || msLeft <= 0}>
              {copied ? "Copied" : "Copy"}
            </Button>
            <Button onClick={() => void mint()}>Mint new</Button>
          </div>
          <p className="text-xs text-zinc-500 dark:text-zinc-400">
            Single-use and short-lived: attach its WebSocket URL before it expires, offering the
            subprotocols{" "}
            <span className="font-mono">shells.term.v1, shells.token.&lt;token&gt;</span> (or run{" "}
            <span className="font-mono">shells term {"<shell>"}</span>, which mints its own). The
            server keeps only a hash; nothing durable is left to steal.
          </p>
          <ErrorNote error={mintError} />
        </section>

        <section aria-label="Embedded terminal" className="space-y-2">
          <div className="flex items-center justify-between">
            <h3 className="text-sm font-semibold">Terminal</h3>
            <div className="flex items-center gap-2">
              <span className="text-xs text-zinc-500" data-testid="terminal-state">
                {connection}
              </span>
              {connection === "open" ? (
                <Button onClick={() => hangUp?.()}>Disconnect</Button>
              ) : (
                <Button
                  variant="primary"
                  onClick={() => void connect()}
                  disabled={!terminal || connection === "connecting"}
                >
                  Connect
                </Button>
              )}
            </div>
          </div>
          <TerminalView
            label="pty-terminal"
            interactive
            onReady={onTerminalReady}
            className="h-72"
          />
        </section>
      </div>
    </Dialog>
  );
}
