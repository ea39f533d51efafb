// Types of scripts/sidecar-bundle.mjs for the TypeScript that imports it (bench/mesh.ts).
export declare const ROOT: string;
export declare const SIDECAR_ENTRY: string;
export declare const SIDECAR_BUNDLE: string;
export declare function buildBundle(options?: { entry?: string; outfile?: string }): Promise<string>;
export declare function staleness(outfile?: string): string | undefined;
export declare function ensureBundle(options?: { entry?: string; outfile?: string }): Promise<string>;
export declare function ensureSidecarBundle(): Promise<string>;
export declare const SIDECAR_ENV: Readonly<{ NODE_OPTIONS: string; MALLOC_ARENA_MAX: string }>;
export declare function sidecarEnv(env?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
