import { useCallback, useEffect, useRef, useState } from "react";

/** The latest answer of a polled call, its last error, and a way to poll now. */
export interface Poll<T> {
  data: T | undefined;
  error: unknown;
  refresh: () => void;
}

/**
 * Calls `load` now and again `intervalMs` after each answer (never two in flight), keeping the last
 * good data when a poll fails so a blip shows as an error note, not an empty table.
 */
export function usePoll<T>(load: () => Promise<T>, intervalMs: number, key = ""): Poll<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      try {
        const next = await loadRef.current();
        if (stopped) return;
        setData(next);
        setError(null);
      } catch (caught) {
        if (!stopped) setError(caught);
      }
      if (!stopped) timer = setTimeout(() => void poll(), intervalMs);
    };
    void poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [intervalMs, key, tick]);
  const refresh = useCallback(() => setTick((n) => n + 1), []);
  return { data, error, refresh };
}

/** The current time, re-read every `intervalMs` (for ages and countdowns). */
export function useNow(intervalMs = 1000): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(timer);
  }, [intervalMs]);
  return now;
}
