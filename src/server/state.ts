/**
 * What the HTTP layer knows about the process: whether the model is loaded, the engine once it
 * is, and the requests in flight (so shutdown can wait for them). `tandem serve` owns it and
 * flips `status`; the routes only read it.
 */
import type { GenerationDefaults, ModelConfig } from '../model/config.ts';
import type { TextTokenizer } from '../model/tokenizer.ts';
import type { EngineStats, GenerationRequest, TokenEvent } from '../engine/types.ts';

export type ServerStatus = 'loading' | 'ready' | 'failed' | 'stopping';

/** A loaded LoRA adapter's current version, as the API shows it (engine/adapters.ts). */
export interface ServedAdapter {
  readonly name: string;
  /** `${name}@v${version}`. */
  readonly id: string;
  /** The PEFT folder it was loaded from; null when the trainer published it. */
  readonly source: string | null;
  /** Unix seconds. */
  readonly created: number;
}

/** The part of the engine (src/engine/engine.ts) the server uses; tests may pass a stand-in. */
export interface ServingEngine {
  readonly loaded: { readonly dir: string; readonly config: ModelConfig; readonly generation: GenerationDefaults; readonly tokenizer: TextTokenizer };
  readonly maxModelLen: number;
  /** The adapters requests may name as `model`. */
  readonly adapters: { get(name: string): ServedAdapter | undefined; list(): readonly ServedAdapter[] };
  /** Throws EngineError synchronously; leaving the iteration early aborts the request. */
  add(req: GenerationRequest): AsyncIterable<TokenEvent>;
  abort(requestId: string): void;
  stats(): EngineStats;
  drain(): Promise<void>;
  abortAll(): void;
}

export interface ServerState {
  status: ServerStatus;
  /** The name clients send as `model` (--served-model-name, else the model folder's name). */
  modelName: string;
  backend: string;
  engine: ServingEngine | null;
  /** `system_fingerprint` of base-model responses; an adapter's add `+<name>@v<n>`. */
  fingerprint: string;
  error?: string;
  /** Generation requests whose response has not finished yet. */
  readonly inFlight: InFlight;
}

/** Counts requests in flight and lets shutdown wait until none are left. */
export class InFlight {
  #count = 0;
  #idle: (() => void)[] = [];

  get count(): number {
    return this.#count;
  }

  /** Returns the function that ends this request; calling it twice is harmless. */
  begin(): () => void {
    this.#count++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#count--;
      if (this.#count === 0) for (const resolve of this.#idle.splice(0)) resolve();
    };
  }

  idle(): Promise<void> {
    return this.#count === 0 ? Promise.resolve() : new Promise((resolve) => this.#idle.push(resolve));
  }
}

export function createServerState(init: { modelName: string; backend: string; fingerprint: string }): ServerState {
  return { status: 'loading', engine: null, inFlight: new InFlight(), ...init };
}
