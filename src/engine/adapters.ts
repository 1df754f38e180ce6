/**
 * The LoRA adapters the engine serves, by name, with versioned hot swap.
 *
 * Each name points at its current version. publish() makes a new version current between two
 * engine steps (publish is synchronous, and steps only read pinned versions); a sequence pins
 * the version that was current when it was added and keeps it through preemption and
 * recompute, so one response is produced by exactly one version. A version that is no longer
 * current (superseded or unloaded) is freed when its last pin goes.
 *
 * Version numbers count up per name for the registry's whole life, unload included, so an id
 * such as `math@v3` names one set of weights forever: the prefix cache keys K/V blocks by it.
 */
import type { Backend } from '../backend/backend.ts';
import type { ModelConfig } from '../model/config.ts';
import { attachComputeCopy, deviceLoraBytes, freeDeviceLora, loraLayout, uploadLora, type DeviceLora } from '../model/lora-device.ts';
import { loadPeftAdapter } from '../model/lora-peft.ts';

/** One immutable set of adapter weights on the backend. */
export interface AdapterVersion {
  readonly name: string;
  /** 1, 2, ... per name. */
  readonly version: number;
  /** `${name}@v${version}`: in system_fingerprint and in the prefix cache's hash root. */
  readonly id: string;
  readonly lora: DeviceLora;
  /** Backend bytes of the parameters. */
  readonly bytes: number;
  /** The PEFT directory it was loaded from, or null (published by the trainer). */
  readonly source: string | null;
  /** Unix seconds when it was published. */
  readonly created: number;
  /** Sequences using it now. */
  readonly refs: number;
  /** Not listed by list() (a training job's private rollout policy); requests may still name it. */
  readonly hidden: boolean;
  /** 'current': what new requests get; 'retired': kept for its pins; 'freed': gone. */
  readonly state: 'current' | 'retired' | 'freed';
}

/** Resident memory of one adapter name, for metrics. */
export interface AdapterUsage {
  name: string;
  /** Versions on the backend: the current one plus retired ones still pinned. */
  versions: number;
  bytes: number;
}

type MutableVersion = { -readonly [K in keyof AdapterVersion]: AdapterVersion[K] };

/** Letters, digits and . _ - / : (no '@' or '+', which ids and fingerprints use as separators). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._\-/:]{0,127}$/;

export class AdapterRegistry {
  readonly #current = new Map<string, MutableVersion>();
  /** Every version on the backend (current or retired and pinned). */
  readonly #resident = new Set<MutableVersion>();
  /** Last version number per name; never forgotten, so ids are never reused. */
  readonly #lastVersion = new Map<string, number>();
  #freedCount = 0;
  readonly #freeListeners: ((lora: DeviceLora) => void)[] = [];

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
  ) {}

  /**
   * Make `lora` the current version of `name`. The registry takes ownership of `lora` (it
   * frees it when the version is done); on an error nothing is taken.
   */
  publish(name: string, lora: DeviceLora, opts: { source?: string; hidden?: boolean } = {}): AdapterVersion {
    checkAdapterName(name);
    this.#checkFits(name, lora);
    attachComputeCopy(this.backend, this.config, lora); // freed with the version (freeDeviceLora)
    const version = (this.#lastVersion.get(name) ?? 0) + 1;
    this.#lastVersion.set(name, version);
    const v: MutableVersion = {
      name,
      version,
      id: `${name}@v${version}`,
      lora,
      bytes: deviceLoraBytes(lora),
      source: opts.source ?? null,
      hidden: opts.hidden ?? false,
      created: Math.floor(Date.now() / 1000),
      refs: 0,
      state: 'current',
    };
    const previous = this.#current.get(name);
    this.#current.set(name, v);
    this.#resident.add(v);
    if (previous) this.#retire(previous);
    return v;
  }

  /** Read a PEFT adapter directory, check it against the base model, upload it and publish it. */
  loadPeft(name: string, dir: string): AdapterVersion {
    checkAdapterName(name);
    let lora: DeviceLora;
    try {
      lora = uploadLora(this.backend, this.config, loadPeftAdapter(dir, this.config));
    } catch (err) {
      throw new Error(`adapter '${name}': ${(err as Error).message}`);
    }
    try {
      return this.publish(name, lora, { source: dir });
    } catch (err) {
      freeDeviceLora(this.backend, lora);
      throw err;
    }
  }

  /** Stop serving `name`: new requests for it fail; sequences already on it finish. False if not loaded. */
  unload(name: string): boolean {
    const v = this.#current.get(name);
    if (!v) return false;
    this.#current.delete(name);
    this.#retire(v);
    return true;
  }

  /** The current version of `name`, if loaded. */
  get(name: string): AdapterVersion | undefined {
    return this.#current.get(name);
  }

  /** Current versions, by name (hidden ones only with { hidden: true }). */
  list(opts: { hidden?: boolean } = {}): AdapterVersion[] {
    return [...this.#current.values()].filter((v) => opts.hidden === true || !v.hidden).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** A sequence holds `version` (pinned at admission) until unpin. */
  pin(version: AdapterVersion): void {
    const v = this.#own(version, 'pin');
    if (v.state !== 'current') throw new Error(`pin: adapter ${v.id} is ${v.state}; pin the current version`);
    v.refs++;
  }

  unpin(version: AdapterVersion): void {
    const v = this.#own(version, 'unpin');
    if (v.refs <= 0) throw new Error(`unpin: adapter ${v.id} is not pinned`);
    v.refs--;
    if (v.refs === 0 && v.state === 'retired') this.#free(v);
  }

  /** Versions freed so far (superseded or unloaded, and unpinned). */
  get freedCount(): number {
    return this.#freedCount;
  }

  /** Resident versions and bytes per name (a retired version counts under its name). */
  usage(): AdapterUsage[] {
    const by = new Map<string, AdapterUsage>();
    for (const v of this.#resident) {
      const u = by.get(v.name) ?? { name: v.name, versions: 0, bytes: 0 };
      u.versions++;
      u.bytes += v.bytes;
      by.set(v.name, u);
    }
    return [...by.values()];
  }

  /** Unload every name; what is still pinned is freed when its pins go. */
  unloadAll(): void {
    for (const name of [...this.#current.keys()]) this.unload(name);
  }

  #retire(v: MutableVersion): void {
    v.state = 'retired';
    if (v.refs === 0) this.#free(v);
  }

  /** Call `fn` with a version's weights just before they are freed (what holds their addresses lets go). */
  onFree(fn: (lora: DeviceLora) => void): void {
    this.#freeListeners.push(fn);
  }

  #free(v: MutableVersion): void {
    v.state = 'freed';
    this.#resident.delete(v);
    this.#freedCount++;
    for (const fn of this.#freeListeners) fn(v.lora);
    freeDeviceLora(this.backend, v.lora);
  }

  #own(version: AdapterVersion, op: string): MutableVersion {
    const v = version as MutableVersion;
    if (!this.#resident.has(v)) throw new Error(`${op}: adapter ${version.id} is not resident in this registry (state ${version.state})`);
    return v;
  }

  /** The adapter's layout must be the one this model implies for its spec. */
  #checkFits(name: string, lora: DeviceLora): void {
    const fail = (msg: string): never => {
      throw new Error(`adapter '${name}' does not fit the base model: ${msg}`);
    };
    let want: ReturnType<typeof loraLayout>;
    try {
      want = loraLayout(this.config, lora.spec);
    } catch (err) {
      return fail((err as Error).message);
    }
    const got = lora.layout;
    // The first differing matrix says most (a model of another width), so compare those first.
    const common = Math.min(got.entries.length, want.entries.length);
    for (let i = 0; i < common; i++) {
      const [e, w] = [got.entries[i], want.entries[i]];
      if (e.layer !== w.layer || e.target !== w.target || e.inFeatures !== w.inFeatures || e.outFeatures !== w.outFeatures || e.aOffset !== w.aOffset || e.bOffset !== w.bOffset) {
        fail(`${e.target} of layer ${e.layer} is [${e.outFeatures}, ${e.inFeatures}]; the model's ${w.target} of layer ${w.layer} is [${w.outFeatures}, ${w.inFeatures}]`);
      }
    }
    if (got.rank !== want.rank || got.size !== want.size || got.entries.length !== want.entries.length) {
      fail(
        `its layout (rank ${got.rank}, ${got.entries.length} A/B pairs, ${got.size} values) differs from the model's ` +
          `(rank ${want.rank}, ${want.entries.length} pairs, ${want.size} values for ${lora.spec.targets.join(', ')} in ${this.config.numLayers} layers)`,
      );
    }
    const p = lora.params;
    if (p.dtype !== 'f32' || p.shape.length !== 1 || p.shape[0] !== want.size) {
      fail(`params is ${p.dtype} [${p.shape.join(', ')}], expected f32 [${want.size}]`);
    }
    if (lora.views.length !== this.config.numLayers) fail(`it has views for ${lora.views.length} layers, the model has ${this.config.numLayers}`);
    if (!(Number.isFinite(lora.scale) && lora.scale !== 0)) fail(`scale ${lora.scale} is not a finite non-zero number`);
  }
}

/** Throws unless `name` can name an adapter. */
export function checkAdapterName(name: string): void {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new Error(
      `adapter name ${JSON.stringify(name)} is invalid: use 1 to 128 letters, digits and . _ - / : (starting with a letter or digit; no '@' or '+')`,
    );
  }
}
