/** vLLM's POST /tokenize and POST /detokenize. */
import { ERROR_RESPONSES, postJson, type App } from '../routes.ts';
import { readyEngine, resolveModel } from '../ready.ts';
import type { ServerState } from '../state.ts';
import { checkTokenIds, renderChat } from './prompt.ts';
import { DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse } from './schemas/tokenize.ts';

export function registerTokenize(app: App, state: ServerState): void {
  const errors = { 400: ERROR_RESPONSES[400], 404: ERROR_RESPONSES[404], 503: ERROR_RESPONSES[503] };
  postJson(
    app,
    {
      path: '/tokenize',
      summary: 'Tokenize a prompt or a conversation',
      description: 'Counts exactly what a completion (prompt) or chat completion (messages) request would send to the model.',
      tags: ['Tokenizer'],
      responses: { 200: { description: 'The token ids', content: { 'application/json': { schema: TokenizeResponse } } }, ...errors },
    },
    TokenizeRequest,
    (c, req) => {
      const engine = readyEngine(state);
      resolveModel(state, req.model);
      const tokenizer = engine.loaded.tokenizer;
      let tokens: number[];
      if (req.messages != null) {
        const text = renderChat(engine, req.messages, {
          addGenerationPrompt: req.add_generation_prompt,
          continueFinalMessage: req.continue_final_message,
          chatTemplateKwargs: req.chat_template_kwargs,
        });
        tokens = tokenizer.encode(text, { addSpecialTokens: req.add_special_tokens ?? false });
      } else {
        tokens = tokenizer.encode(req.prompt ?? '', { addSpecialTokens: req.add_special_tokens ?? true });
      }
      const tokenStrs = req.return_token_strs ? tokens.map((id) => tokenizer.decode([id])) : null;
      return c.json({ count: tokens.length, max_model_len: engine.maxModelLen, tokens, token_strs: tokenStrs });
    },
  );
  postJson(
    app,
    {
      path: '/detokenize',
      summary: 'Turn token ids back into text',
      tags: ['Tokenizer'],
      responses: { 200: { description: 'The text', content: { 'application/json': { schema: DetokenizeResponse } } }, ...errors },
    },
    DetokenizeRequest,
    (c, req) => {
      const engine = readyEngine(state);
      resolveModel(state, req.model);
      checkTokenIds(engine, req.tokens, 'tokens');
      return c.json({ prompt: engine.loaded.tokenizer.decode(req.tokens) });
    },
  );
}
