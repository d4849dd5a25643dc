/** The one place that imports inquirer. */
export async function confirm(message: string): Promise<boolean> {
  const { confirm } = await import("@inquirer/prompts");
  return confirm({ message, default: false });
}

export async function choose<T extends string>(message: string, choices: { name: string; value: T; description?: string }[]): Promise<T> {
  const { select } = await import("@inquirer/prompts");
  return select<T>({ message, choices, pageSize: 15 });
}
