// The reference GRPO recipe's system prompt and prompt builders.
//
// Source of the text: Unsloth's "Qwen2.5 (3B) GRPO" notebook (github.com/unslothai/notebooks,
// nb/Qwen2.5_(3B)-GRPO.ipynb), which took it from Will Brown's grpo_demo.py gist
// (gist.github.com/willccbb/4676755236bb08cab5f4e54a0475d6fb). The notebook writes it as a
// Python triple-quoted string that opens and closes on its own line, so the prompt starts
// and ends with a newline; we keep both, so prompts tokenize exactly as in the notebook.
// (Later revisions of the gist add a blank line after "format:"; Unsloth's does not.)

/** A chat turn as datasets carry it; assignable to the chat template's ChatMessage. */
export interface ChatTurn {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  name?: string;
  /** OpenAI fine-tuning files: 0 excludes this assistant turn from the SFT loss. */
  weight?: 0 | 1;
}

export const SYSTEM_PROMPT =
  '\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n';

/** The completion shape the format rewards look for (the reference's XML_COT_FORMAT). */
export function xmlCot(reasoning: string, answer: string): string {
  return `<reasoning>\n${reasoning}\n</reasoning>\n<answer>\n${answer}\n</answer>\n`;
}

/** A GSM8K prompt as the reference builds it: the system prompt, then the question. */
export function gsm8kPrompt(question: string, systemPrompt: string = SYSTEM_PROMPT): ChatTurn[] {
  return [
    { role: 'system', content: systemPrompt },
    { role: 'user', content: question },
  ];
}
