import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import { useEffect, useRef } from "react";

/** One palette for every terminal surface, in both themes. */
const DARK_THEME = {
  background: "#0b0d10",
  foreground: "#d4d4d8",
  cursor: "#a3e635",
  selectionBackground: "#3f3f46",
  black: "#18181b",
  brightBlack: "#71717a",
  green: "#4ade80",
  brightGreen: "#86efac",
  yellow: "#facc15",
  red: "#f87171",
  blue: "#60a5fa",
  cyan: "#22d3ee",
  magenta: "#e879f9",
};

/**
 * An xterm.js surface, always dark. `onReady` receives the terminal once it is open; the caller
 * writes to it (activity) or wires it to a PTY (credentials). It fits its box and follows resizes.
 *
 * A PTY surface interprets what the attached shell writes, as any terminal does; what it may do
 * beyond the screen stays xterm's safe default: OSC 52 clipboard writes are ignored (only the
 * clipboard addon, not loaded, handles them) and OSC 8 hyperlinks open only on the user's click,
 * only for http(s), after a confirmation, without an opener. Text written to the activity surface
 * is made inert first (`inertText`), so nothing in it is interpreted at all.
 */
export function TerminalView({
  onReady,
  label,
  interactive = false,
  className = "h-64",
}: {
  onReady: (terminal: Terminal) => (() => void) | void;
  label: string;
  interactive?: boolean;
  className?: string;
}) {
  const boxRef = useRef<HTMLDivElement>(null);
  const onReadyRef = useRef(onReady);
  useEffect(() => {
    const box = boxRef.current;
    if (!box) return;
    const terminal = new Terminal({
      theme: DARK_THEME,
      fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace',
      fontSize: 12.5,
      lineHeight: 1.2,
      convertEol: !interactive,
      disableStdin: !interactive,
      cursorBlink: interactive,
      cursorStyle: interactive ? "block" : "underline",
      scrollback: 5000,
    });
    const fit = new FitAddon();
    terminal.loadAddon(fit);
    terminal.open(box);
    const refit = () => {
      try {
        fit.fit();
      } catch {
        // A box that is not laid out yet has no size; the next resize fits it.
      }
    };
    refit();
    const observer = new ResizeObserver(refit);
    observer.observe(box);
    const cleanup = onReadyRef.current(terminal);
    return () => {
      cleanup?.();
      observer.disconnect();
      terminal.dispose();
    };
  }, [interactive]);
  return (
    <div className="terminal-surface" data-testid={label}>
      <div ref={boxRef} aria-label={label} className={className} />
    </div>
  );
}
