/** /v1/models: the base model and its LoRA adapters, with vLLM's extra fields (root, parent, max_model_len, permission). */
import { z } from '@hono/zod-openapi';

export const ModelCard = z
  .object({
    id: z.string(),
    object: z.literal('model'),
    created: z.int(),
    owned_by: z.string(),
    root: z
      .string()
      .describe("The folder the weights came from: the model's, or a LoRA adapter's PEFT folder (or, for an adapter published in-process, its current version such as `math@v3`)."),
    parent: z.string().nullable().describe('For a LoRA adapter, the base model it applies to; null for the base model.'),
    max_model_len: z.int(),
    permission: z.array(
      z.object({
        id: z.string(),
        object: z.literal('model_permission'),
        created: z.int(),
        allow_create_engine: z.boolean(),
        allow_sampling: z.boolean(),
        allow_logprobs: z.boolean(),
        allow_search_indices: z.boolean(),
        allow_view: z.boolean(),
        allow_fine_tuning: z.boolean(),
        organization: z.string(),
        group: z.string().nullable(),
        is_blocking: z.boolean(),
      }),
    ),
  })
  .openapi('Model');
export type ModelCard = z.infer<typeof ModelCard>;

export const ModelList = z.object({ object: z.literal('list'), data: z.array(ModelCard) }).openapi('ModelList');
