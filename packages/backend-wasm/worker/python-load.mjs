// @ts-check
/**
 * How every Python worker loads Pyodide, shared with the script that makes the memory snapshot the
 * workers start from: a snapshot only holds for the options it was made with.
 *
 * @param {string} pyodideDir the directory of the `pyodide` package
 */
export function pythonLoadOptions(pyodideDir) {
  return {
    indexURL: `${pyodideDir}/`,
    env: { HOME: "/workspace", PATH: "/usr/bin" },
    stdout: undefined,
  };
}
