// Run a Python file on the real MicroPython interpreter (the WebAssembly port) under Node.js,
// with the lock's code installed as the package `ewlock` (as on a board: /lib/ewlock).
//
//   node tools/micropython/run.mjs SCRIPT.py [--mcu DIR] [--serve]
//
// Without --serve the script runs once; its print() output goes to stdout. With --serve the
// script must define `on_bytes(hex)`; stdin bytes are handed to it and it answers by calling
// `host.write(hex)` (a registered JS module), which writes raw bytes to stdout: a serial line.
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const script = args[0];
const mcuIdx = args.indexOf("--mcu");
const mcuDir = mcuIdx >= 0 ? args[mcuIdx + 1] : resolve(here, "../../firmware_shim/mcu");
const serve = args.includes("--serve");
const { loadMicroPython } = await import(
  join(here, "node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs"));

const err = (s) => process.stderr.write(s + "\n");
const mp = await loadMicroPython({
  heapsize: 512 * 1024, // an ESP32 has about 100-300 KiB free: keep the heap small and honest
  stdout: serve ? err : (s) => process.stdout.write(s + "\n"),
  stderr: err,
});
mp.FS.mkdir("/lib");
mp.FS.mkdir("/lib/ewlock");
for (const f of readdirSync(mcuDir)) {
  if (f.endsWith(".py")) mp.FS.writeFile(`/lib/ewlock/${f}`, readFileSync(join(mcuDir, f)));
}
mp.registerJsModule("host", {
  write: (hex) => { process.stdout.write(Buffer.from(hex, "hex")); },
});
try {
  mp.runPython("import sys\nsys.path.insert(0, '/lib')\n" + readFileSync(script, "utf8"));
} catch (e) {
  err(String(e.message || e));
  process.exit(1);
}
if (serve) {
  const onBytes = mp.globals.get("on_bytes");
  process.stdin.on("data", (chunk) => {
    try { onBytes(chunk.toString("hex")); } catch (e) { err(String(e.message || e)); process.exit(1); }
  });
  process.stdin.on("end", () => process.exit(0));
}
