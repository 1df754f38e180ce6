// The five GSM8K rewards of the reference GRPO recipe, reproduced exactly, quirks included,
// so reward curves can be compared with Unsloth / TRL runs.
//
// Source: Unsloth's "Qwen2.5 (3B) GRPO" notebook (github.com/unslothai/notebooks,
// nb/Qwen2.5_(3B)-GRPO.ipynb), whose rewards come from Will Brown's grpo_demo.py gist
// (gist.github.com/willccbb/4676755236bb08cab5f4e54a0475d6fb). The reference is Python, so
// the string operations below follow CPython's semantics, not JavaScript's:
//   - str.strip() and the regex class \s use Python's whitespace set (str.isspace), which has
//     \x1c-\x1f and \x85 and lacks JavaScript's \uFEFF;
//   - `.` without re.DOTALL matches anything but '\n' (JavaScript's also refuses \r, \u2028,
//     \u2029), so it is written [^\n];
//   - `$` without re.MULTILINE matches at the end or just before one final '\n', so it is
//     written (?=\n?$) with JavaScript's `$` meaning "end of input";
//   - re.match anchors at the start only, so the patterns start with ^;
//   - len() counts code points, not UTF-16 units;
//   - str.isdigit() is true for a non-empty string of Unicode decimal digits (\p{Nd}) and
//     "digit" characters such as superscripts and circled digits.
// Known quirk kept on purpose: without re.DOTALL the soft format reward is 0 for any
// completion with a newline inside <reasoning> or <answer>, the recipe's own format included
// (unslothai/unsloth#1761, unslothai/notebooks#11).

// ---- CPython string semantics ----

// Every character for which CPython's str.isspace() is true (Unicode 14 / Python 3.11; the
// set has not changed since Unicode 6).
const PY_WHITESPACE = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_STRIP = new RegExp(`^[${PY_WHITESPACE}]+|[${PY_WHITESPACE}]+$`, 'g');

// Characters with Numeric_Type=Digit (str.isdigit() but not str.isdecimal()), from CPython
// 3.11's unicodedata (Unicode 14). Numeric_Type=Decimal is \p{Nd}.
const PY_DIGIT = new RegExp(
  '^[\\p{Nd}\\u00b2\\u00b3\\u00b9\\u1369-\\u1371\\u19da\\u2070\\u2074-\\u2079\\u2080-\\u2089' +
    '\\u2460-\\u2468\\u2474-\\u247c\\u2488-\\u2490\\u24ea\\u24f5-\\u24fd\\u24ff\\u2776-\\u277e' +
    '\\u2780-\\u2788\\u278a-\\u2792\\u{10a40}-\\u{10a43}\\u{10e60}-\\u{10e68}\\u{11052}-\\u{1105a}' +
    '\\u{1f100}-\\u{1f10a}]+$',
  'u',
);

/** Python's `s.strip()`. */
export function pyStrip(s: string): string {
  return s.replace(PY_STRIP, '');
}

/** Python's `s.isdigit()`: false for '', '-3', '1.5'; true for '042', '٣' and '²'. */
export function pyIsDigit(s: string): boolean {
  return PY_DIGIT.test(s);
}

/** Python's `len(s)`: code points. */
export function pyLen(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** Python's `s.count(sub)` for a non-empty `sub`: non-overlapping, left to right. */
export function pyCount(s: string, sub: string): number {
  return s.split(sub).length - 1;
}

// ---- answer extraction ----

/** The reference's extract_xml_answer: after the last "<answer>", before the next "</answer>", stripped. */
export function extractXmlAnswer(text: string): string {
  const afterOpen = text.split('<answer>').at(-1)!;
  return pyStrip(afterOpen.split('</answer>')[0]!);
}

/**
 * The reference's extract_hash_answer: the text between the first "####" and the next one
 * (normally the rest of the text), stripped; null when there is no "####".
 */
export function extractHashAnswer(text: string): string | null {
  if (!text.includes('####')) return null;
  return pyStrip(text.split('####')[1]!);
}

// ---- the five rewards ----

/** 2.0 when the extracted answer equals the gold answer string exactly (no gold answer: 0.0). */
export function correctnessReward(completion: string, answer: string | null | undefined): number {
  return extractXmlAnswer(completion) === answer ? 2.0 : 0.0;
}

/** 0.5 when the extracted answer is all digits in Python's sense (so not '-3', '1,080' or ''). */
export function intReward(completion: string): number {
  return pyIsDigit(extractXmlAnswer(completion)) ? 0.5 : 0.0;
}

// r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$" with re.match: one line of
// reasoning, one line of answer, and at most one extra '\n' at the end.
const STRICT_FORMAT = /^<reasoning>\n[^\n]*?\n<\/reasoning>\n<answer>\n[^\n]*?\n<\/answer>\n(?=\n?$)/;

// r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>" with re.match: tags from the very
// start, no newline inside either element, anything may follow.
const SOFT_FORMAT = new RegExp(`^<reasoning>[^\\n]*?</reasoning>[${PY_WHITESPACE}]*<answer>[^\\n]*?</answer>`);

export function strictFormatReward(completion: string): number {
  return STRICT_FORMAT.test(completion) ? 0.5 : 0.0;
}

export function softFormatReward(completion: string): number {
  return SOFT_FORMAT.test(completion) ? 0.5 : 0.0;
}

/**
 * The reference's count_xml: 0.125 for each tag, with its newlines, seen exactly once, less
 * 0.001 per character after the answer. The additions run in the reference's order so the
 * float64 result is bit-identical.
 */
export function xmlCountReward(text: string): number {
  let count = 0.0;
  if (pyCount(text, '<reasoning>\n') === 1) count += 0.125;
  if (pyCount(text, '\n</reasoning>\n') === 1) count += 0.125;
  if (pyCount(text, '\n<answer>\n') === 1) {
    count += 0.125;
    count -= pyLen(text.split('\n</answer>\n').at(-1)!) * 0.001;
  }
  if (pyCount(text, '\n</answer>') === 1) {
    count += 0.125;
    count -= (pyLen(text.split('\n</answer>').at(-1)!) - 1) * 0.001;
  }
  return count;
}
