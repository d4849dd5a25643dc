// Module hooks for the grading child (plain JS: hook modules load before TypeScript does).
//
// A submission may live anywhere on disk with no node_modules beside it. Its bare imports
// (amqplib, kafkajs, better-sqlite3, msglab/contracts/...) fall back to the lab's own
// install, and a .ts file outside the lab is always ESM, whatever package.json is near it.
let labUrl = "";
let labPackageUrl = "";

export async function initialize(data) {
  labUrl = data.labUrl;
  labPackageUrl = new URL("package.json", labUrl).href;
}

const isBare = (s) => !/^(\.{0,2}\/|node:|file:|data:)/.test(s);

export async function resolve(specifier, context, nextResolve) {
  let result;
  try {
    result = await nextResolve(specifier, context);
  } catch (error) {
    // Whatever the importing file's folder (the default workspace sits inside the lab, with a
    // package.json of its own that hides the lab's name), a bare import falls back to the lab.
    if (!isBare(specifier)) throw error;
    result = await nextResolve(specifier, { ...context, parentURL: labPackageUrl });
  }
  if (result.url.startsWith("file:") && !result.url.startsWith(labUrl) && /\.(ts|mts)$/.test(result.url)) {
    return { ...result, format: "module" };
  }
  return result;
}
