// Builds a JavaScript plugin into a component of the `plugin` world with componentize-js:
//
//   node sdk/js/build.mjs <app.js> <out.wasm> [wit directory, default: wit]
//
// Run it from the directory that holds both the plugin and the SDK it imports (the repository
// root for the examples): componentize-js resolves relative imports from there.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";

const [sourcePath, output, witPath = "wit"] = process.argv.slice(2);
if (!sourcePath || !output) {
  console.error("usage: node sdk/js/build.mjs <app.js> <out.wasm> [wit directory]");
  process.exit(2);
}
const { component } = await componentize({ sourcePath, witPath, worldName: "plugin" });
await writeFile(output, component);
console.log(`${output}: ${component.length} bytes`);
