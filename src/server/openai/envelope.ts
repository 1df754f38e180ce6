/** The fields every completion response and chunk starts with, in OpenAI's order. */
export interface Meta {
  id: string;
  created: number;
  model: string;
  system_fingerprint: string;
}

export function envelope<O extends string>(meta: Meta, object: O): { id: string; object: O; created: number; model: string; system_fingerprint: string } {
  return { id: meta.id, object, created: meta.created, model: meta.model, system_fingerprint: meta.system_fingerprint };
}
