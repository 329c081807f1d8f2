/**
 * Interpreter drivers: small programs started inside a shell that keep one interpreter warm and
 * run turns sent as JSON lines on stdin. Each answer is one line on the real stdout that starts
 * with `TURN_MARK`; the turn's own prints are captured and returned inside the answer, so user
 * output can never be mistaken for a protocol line.
 */

/** Prefix of every answer line. */
export const TURN_MARK = "\u001eSHELLS-TURN ";

/** Python: globals persist across turns; the last expression's value is returned. */
export const PYTHON_DRIVER = String.raw`
import ast, builtins, contextlib, io, json, sys, traceback
MARK = "\x1eSHELLS-TURN "
out = sys.__stdout__
scope = {"__name__": "__main__", "__builtins__": builtins}

def value_of(v):
    try:
        json.dumps(v)
        return v
    except Exception:
        return repr(v)

for line in sys.stdin:
    request = json.loads(line)
    captured_out, captured_err = io.StringIO(), io.StringIO()
    value, error = None, None
    try:
        tree = ast.parse(request["code"], "<turn>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        with contextlib.redirect_stdout(captured_out), contextlib.redirect_stderr(captured_err):
            exec(compile(tree, "<turn>", "exec"), scope)
            if last is not None:
                result = eval(compile(last, "<turn>", "eval"), scope)
                if result is not None:
                    value = value_of(result)
    except BaseException as e:
        error = {"name": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
    out.write(MARK + json.dumps({"id": request["id"], "stdout": captured_out.getvalue(), "stderr": captured_err.getvalue(), "value": value, "error": error}) + "\n")
    out.flush()
`;

/** Node: each turn is a script in one realm, so top-level declarations persist across turns. */
export const NODE_DRIVER = String.raw`
const readline = require("node:readline");
const vm = require("node:vm");
const util = require("node:util");
const { Console } = require("node:console");
const { Writable } = require("node:stream");
const MARK = "\x1eSHELLS-TURN ";
const realWrite = process.stdout.write.bind(process.stdout);
const sink = () => { let text = ""; return { stream: new Writable({ write(chunk, _e, done) { text += chunk; done(); } }), get text() { return text; } }; };
globalThis.require = require;
const rl = readline.createInterface({ input: process.stdin, terminal: false });
let queue = Promise.resolve();
rl.on("line", (line) => { queue = queue.then(() => turn(JSON.parse(line))); });
async function turn(request) {
  const out = sink(), err = sink();
  const saved = { console: globalThis.console, write: process.stdout.write, ewrite: process.stderr.write };
  globalThis.console = new Console({ stdout: out.stream, stderr: err.stream });
  process.stdout.write = (chunk, ...rest) => out.stream.write(chunk, ...rest);
  process.stderr.write = (chunk, ...rest) => err.stream.write(chunk, ...rest);
  let value = null, error = null;
  try {
    let result = vm.runInThisContext(request.code, { filename: "turn.js" });
    if (result && typeof result.then === "function") result = await result;
    if (result !== undefined) {
      try { JSON.stringify(result); value = result === undefined ? null : JSON.parse(JSON.stringify(result)); }
      catch { value = util.inspect(result); }
    }
  } catch (e) {
    error = { name: (e && e.name) || "Error", message: (e && e.message) || String(e), traceback: (e && e.stack) || String(e) };
  } finally {
    globalThis.console = saved.console;
    process.stdout.write = saved.write;
    process.stderr.write = saved.ewrite;
  }
  await new Promise((resolve) => setImmediate(resolve));
  realWrite(MARK + JSON.stringify({ id: request.id, stdout: out.text, stderr: err.text, value, error }) + "\n");
}
`;
