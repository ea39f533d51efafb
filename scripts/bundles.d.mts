// Types of scripts/bundles.mjs for the TypeScript that imports it (bench/mesh.ts).
export interface CommandBundle {
  readonly entry: string;
  readonly outfile: string;
  readonly sidecarEnv: boolean;
}
export declare const ROOT: string;
export declare const COMMAND_BUNDLES: Readonly<Record<"sidecar" | "gateway" | "controller" | "federation", CommandBundle>>;
export declare const SIDECAR_ENTRY: string;
export declare const SIDECAR_BUNDLE: string;
export declare function buildBundle(options?: Partial<CommandBundle>): Promise<string>;
export declare function staleness(outfile?: string): string | undefined;
export declare function ensureBundle(options?: Partial<CommandBundle>): Promise<string>;
export declare function ensureCommandBundle(command: keyof typeof COMMAND_BUNDLES): Promise<string>;
export declare function ensureSidecarBundle(): Promise<string>;
export declare function ensureCommandBundleInChild(command: keyof typeof COMMAND_BUNDLES): string;
export declare const SIDECAR_ENV: Readonly<{ NODE_OPTIONS: string; MALLOC_ARENA_MAX: string }>;
export declare function sidecarEnv(env?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
