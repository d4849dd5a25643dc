/**
 * A broker (or library) an exercise needs. SQLite is a file and ZeroMQ brokerless, so neither
 * needs `msglab up`; naming them loads their native library into each host before it is locked.
 */
export type Broker = "rabbitmq" | "kafka" | "sqlite" | "zeromq";
export const BROKERS: readonly Broker[] = ["rabbitmq", "kafka", "sqlite", "zeromq"];

export type Difficulty = "beginner" | "intermediate" | "advanced";
export const DIFFICULTIES: readonly Difficulty[] = ["beginner", "intermediate", "advanced"];

/** One multiple-choice concept check, built from an answer's "use when / avoid when". */
export interface QuizQuestion {
  question: string;
  choices: string[];
  /** Index into `choices`. */
  answer: number;
  explanation: string;
}

/** What `exercises/<NN-topic>/<slug>/exercise.json` holds. */
export interface ExerciseMeta {
  id: string;
  title: string;
  topic: string;
  difficulty: Difficulty;
  brokers: Broker[];
  /** The seed question this answers, "S1".."S20", or null for the "Beyond" exercises. */
  seed: string | null;
  /** The learner's file, relative to the exercise folder; the solution mirrors it. */
  entry: string;
  /** Hard wall-clock limit for one grading run, in milliseconds. */
  timeoutMs: number;
  /** Memory cap of each submission host, in MiB (default 512). */
  memoryMb?: number;
  hints: string[];
  quiz: QuizQuestion[];
}

/** An exercise as the lab sees it: metadata plus resolved paths. */
export interface Exercise extends ExerciseMeta {
  /** 1-based position in the course. */
  order: number;
  /** "02-rabbitmq/priority-queue": the same under exercises/ and solutions/. */
  dir: string;
  exerciseDir: string;
  scaffoldPath: string;
  solutionPath: string;
  graderPath: string;
  briefPath: string;
}
