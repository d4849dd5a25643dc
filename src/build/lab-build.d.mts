/** The folder of the current build of the lab (compiled on first use, cached by content). */
export function labBuild(): Promise<string>;
/** Where a lab source file (a grader, the child) ends up in a build. */
export function builtPath(buildDir: string, sourceFile: string): string;
export const LAB_ROOT: string;
