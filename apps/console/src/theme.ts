import { useEffect, useState } from "react";

/** The user's choice: follow the OS (`system`) or force one theme. */
export type ThemeChoice = "light" | "dark" | "system";

const THEME_KEY = "shells.theme";
const darkQuery = () => matchMedia("(prefers-color-scheme: dark)");

function readChoice(): ThemeChoice {
  const saved = localStorage.getItem(THEME_KEY);
  return saved === "light" || saved === "dark" ? saved : "system";
}

/** The theme choice, persisted in localStorage, applied as the `dark` class on <html>. */
export function useTheme(): [ThemeChoice, (choice: ThemeChoice) => void] {
  const [choice, setChoice] = useState<ThemeChoice>(readChoice);
  useEffect(() => {
    const apply = () => {
      const dark = choice === "dark" || (choice === "system" && darkQuery().matches);
      document.documentElement.classList.toggle("dark", dark);
    };
    apply();
    if (choice === "system") localStorage.removeItem(THEME_KEY);
    else localStorage.setItem(THEME_KEY, choice);
    const query = darkQuery();
    query.addEventListener("change", apply);
    return () => query.removeEventListener("change", apply);
  }, [choice]);
  return [choice, setChoice];
}
