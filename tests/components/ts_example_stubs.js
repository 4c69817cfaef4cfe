// Runs examples/ts-ack-canary/index.ts under node with stand-ins for the Pulumi SDKs: every
// infershift component records its type, name, args and options; Outputs are markers naming the
// resource output they come from (with the keys an apply reads). Prints the records as JSON.
// The example is written in the subset of TypeScript that is also JavaScript, but for imports.
const fs = require("fs");
const source = fs.readFileSync(process.argv[2], "utf8")
  .replace(/^import \* as (\w+) from "([^"]+)";$/gm, 'const $1 = __stub("$2");')
  .replace(/^export const (\w+) =/gm, "__exports.$1 =");

class Output {
  constructor(source) { this.source = source; }
  apply(fn) {
    const keys = [];
    fn(new Proxy({}, { get: (_, k) => { keys.push(k); return undefined; } }));
    return new Output(this.source + keys.map(k => `["${String(k)}"]`).join(""));
  }
  toJSON() { return { __output: this.source }; }
}
const records = [];
const others = [];
function resource(type, list) {
  return class {
    constructor(name, args, opts) {
      const names = xs => (xs || []).map(x => x.__name);
      list.push({ type, name, args: args || {}, providers: names(opts && opts.providers),
                  dependsOn: names(opts && opts.dependsOn) });
      this.__name = name;
      return new Proxy(this, { get: (t, k) => (k in t || typeof k !== "string") ? t[k] : new Output(`${name}.${k}`) });
    }
  };
}
const stubs = {
  "@pulumi/pulumi": { Config: class { get() { return undefined; } getNumber() { return undefined; } } },
  "@pulumi/alicloud": { Provider: resource("pulumi:providers:alicloud", others),
                        cs: { getClusterCredentialOutput: () => ({ kubeConfig: new Output("credential.kubeConfig") }) } },
  "@pulumi/kubernetes": { Provider: resource("pulumi:providers:kubernetes", others) },
  "@pulumi/infershift": new Proxy({}, { get: (_, k) => resource(`infershift:index:${String(k)}`, records) }),
};
const __stub = name => { if (!(name in stubs)) throw new Error(`no stand-in for ${name}`); return stubs[name]; };
const __exports = {};
new Function("__stub", "__exports", source)(__stub, __exports);
console.log(JSON.stringify({ components: records, others: others, exports: __exports }));
