// Loaded with `--import` after tsx, in the grading child only.
import { register } from "node:module";

register("./lab-resolve.mjs", import.meta.url, {
  data: { labUrl: new URL("../../", import.meta.url).href },
});
