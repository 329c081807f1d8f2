/** C0 controls, DEL and C1 controls: every character a terminal may act on rather than print. */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/**
 * Untrusted text made inert for a terminal surface. Text from a sandbox (logs, outputs, error
 * messages) or from a command string must print as itself: interpreted, an escape sequence in it
 * could clear the screen (`ESC [2J`), rewrite earlier lines (`CR`, cursor moves), set the window
 * title, write the clipboard (OSC 52) or plant a hyperlink (OSC 8) in the console.
 *
 * Each control character is replaced by a visible stand-in: C0 controls by their Unicode control
 * pictures (`ESC` as `␛`, `BEL` as `␇`, newline as `␊`), DEL by `␡`, C1 controls by `\x9b`-style
 * escapes. Printable text, non-ASCII letters included, is unchanged.
 */
export function inertText(text: string): string {
  return text.replace(CONTROL, (control) => {
    const code = control.charCodeAt(0);
    if (code < 0x20) return String.fromCharCode(0x2400 + code);
    if (code === 0x7f) return "\u2421";
    return `\\x${code.toString(16)}`;
  });
}
