r"""GSM8K for the hub lab: the prompt, the training target, the answer extractor, the template check

**Answer format: ``\boxed{}``.** The prompt asks for the final answer in ``\boxed{}``
(:data:`INSTRUCTION`), the format Qwen models are trained to use for math. We chose it over
GSM8K's own ``#### 42`` because a box has a closing brace: a truncated answer (``\boxed{1``) is
recognisably incomplete, and ``####`` collides with markdown level-4 headings, which Qwen3 writes
in step-by-step answers (``#### Step 2: ...``). The extractor still reads ``#### 42`` lines, so
GSM8K's reference solutions and models that keep that habit are scored.

**Targets** (SFT/KD on data, the OPSD hint): GSM8K's calculator annotations ``<<48/2=24>>`` are
removed (the standard preprocessing: neither model writes them) and the closing ``#### 72`` line
becomes ``The final answer is \boxed{72}.``, the format the prompt asks for.

**Extraction** (:func:`extract_answer`), in order: the last complete ``\boxed{...}``; else the last
line ``#### <number>`` (a number and at most a unit after it, so ``#### Step 1`` and ``#### 1.
Total`` headings are skipped); else the last "answer is / answer: <number>" phrase. Anything else
(no stated answer, a truncated output) is ``None``: an unformatted output earns no reward, rather
than a guess from its last number (``lenient=True`` adds that guess, e.g. for base models).

**Thinking off.** Both models are prompted with ``enable_thinking=False``;
``opd_lib.lab.tasks.check_same_template`` renders a prompt with both tokenizers and refuses a
pair whose renderings differ or whose Qwen3 template did not write the empty think block
(:data:`THINK_OFF`).
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "INSTRUCTION",
    "THINK_OFF",
    "MAX_NEW_TOKENS",
    "MAX_PROMPT_TOKENS",
    "SAMPLE_RECORDS",
    "clean_solution",
    "extract_answer",
    "format_prompt",
    "normalise_number",
    "same_number",
]

INSTRUCTION = "Solve the problem step by step, then give the final answer as a number in \\boxed{}."
"""Appended to every GSM8K question (the user message)."""

MAX_PROMPT_TOKENS = 256
"""Prompt budget in Qwen3 tokens (template, question, instruction); see ``MAX_NEW_TOKENS``."""

MAX_NEW_TOKENS = 512
"""Completion budget. GSM8K's reference solutions are short (2 to 8 steps, as its authors
describe it; the cleaned targets of :data:`SAMPLE_RECORDS` are under 100 Qwen3 tokens, measured in
``tests/test_lab_gsm8k.py``), but Qwen3 in non-thinking mode writes step-by-step markdown several
times longer than the reference, so 256 tokens would cut some answers off; 512 leaves room, and is
what the memory presets budget for. (Not measured on real Qwen3 outputs: no hub access here.)"""

THINK_OFF = "<think>\n\n</think>\n\n"
_ANNOTATION = re.compile(r"<<[^<>]*>>")
_FINAL_LINE = re.compile(r"\n?####\s*(?P<ans>[^\n]*)\s*$")
# a number: thousands-separated or plain, optional sign (ASCII or unicode minus) and decimals
_NUM = r"[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-\u2212]?\.\d+"
_NUMBER = re.compile(_NUM)
_ANS = rf"(?:{_NUM})(?:\s*/\s*(?:{_NUM}))?"  # a number or a fraction a/b
_FRACTION = re.compile(rf"^({_NUM})\s*/\s*({_NUM})$")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_HASH_LINE = re.compile(
    rf"^\s*####\s*\**\s*(?:\\?\$)?\s*(?P<num>{_ANS})\s*(?:%|[A-Za-z]+(?:\s[A-Za-z]+)?)?\s*\**\.?\s*$",
    re.MULTILINE,
)
_ANSWER_PHRASE = re.compile(
    rf"answer\s*(?:is|:|=)\s*[:*\s]*(?:\\\(|\$)?\s*(?:\\?\$)?\s*(?P<num>{_ANS})",
    re.IGNORECASE,
)


def format_prompt(question: str) -> str:
    """The user message for a GSM8K question: the question, a blank line, :data:`INSTRUCTION`."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string")
    return f"{question.strip()}\n\n{INSTRUCTION}"


def clean_solution(solution: str) -> tuple[str, str]:
    r"""``(target, answer)`` from a GSM8K reference solution: annotations ``<<...>>`` removed and
    the final ``#### 72`` line replaced by ``The final answer is \boxed{72}.``; ``answer`` is the
    normalised number. Raises ``ValueError`` if the solution has no final ``#### <number>``."""
    m = _FINAL_LINE.search(solution.strip())
    answer = normalise_number(m["ans"]) if m else None
    if answer is None:
        raise ValueError(f"no final '#### <number>' line in the solution: {solution[-80:]!r}")
    body = _ANNOTATION.sub("", solution.strip()[: m.start()]).rstrip()
    return f"{body}\nThe final answer is \\boxed{{{answer}}}.", answer


def _to_fraction(s: str) -> Fraction | None:
    s = s.replace(",", "").replace("\u2212", "-").strip()
    if m := _FRACTION.match(s):
        num, den = _to_fraction(m[1]), _to_fraction(m[2])
        return None if num is None or not den else num / den
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def normalise_number(text: str) -> str | None:
    r"""The number a short answer string states, canonically written (``"1,200"``, ``"$1200.00"``
    -> ``"1200"``; ``"3/4"``, ``"\frac{3}{4}"`` -> ``"0.75"``; ``"-5"``, ``"−5"`` -> ``"-5"``),
    ignoring ``$``, ``\$``, ``%``, ``\text{...}`` units and words; ``None`` without a number."""
    s = _LATEX_FRAC.sub(r"\1/\2", text)
    s = re.sub(r"\\(?:text|mathrm)\{([^{}]*)\}", r" \1 ", s)
    s = re.sub(r"\\[,!;]|\\%|\\\$|[$%]", " ", s).strip().strip(".")
    whole = _to_fraction(s)
    if whole is None:
        m = re.search(rf"({_NUM})\s*/\s*({_NUM})", s) or _NUMBER.search(s)
        whole = _to_fraction(m[0]) if m else None
    if whole is None:
        return None
    if whole.denominator == 1:
        return str(whole.numerator)
    return f"{float(whole):.10g}"


def _boxed_contents(text: str) -> list[str]:
    """The contents of every complete ``\\boxed{...}`` (nested braces allowed), in order."""
    out, start = [], 0
    while (i := text.find("\\boxed{", start)) != -1:
        depth, j = 1, i + len("\\boxed{")
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:  # never closed: truncated
            break
        out.append(text[i + len("\\boxed{") : j - 1])
        start = j
    return out


def extract_answer(text: str, lenient: bool = False) -> str | None:
    r"""The final answer a GSM8K solution states, normalised (:func:`normalise_number`), or None.

    Order: the last complete ``\boxed{}`` with a number in it; the last ``#### <number>`` line; the
    last "answer is <number>" / "answer: <number>"; with ``lenient``, the last number anywhere.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    for content in reversed(_boxed_contents(text)):
        if (got := normalise_number(content)) is not None:
            return got
    for pattern in (_HASH_LINE, _ANSWER_PHRASE):
        hits = list(pattern.finditer(text.replace("**", "")))
        if hits:
            return normalise_number(hits[-1]["num"])
    if lenient and (numbers := _NUMBER.findall(text)):
        return normalise_number(numbers[-1])
    return None


def same_number(got: str | None, answer: str) -> bool:
    """Whether two normalised numbers are equal (relative tolerance 1e-6, for decimals)."""
    if got is None:
        return False
    a, b = _to_fraction(got), _to_fraction(normalise_number(answer) or "")
    return a is not None and b is not None and abs(a - b) <= Fraction(1, 10**6) * max(1, abs(b))


SAMPLE_RECORDS: tuple[dict[str, str], ...] = (
    # Written in GSM8K's format for offline tests and the CPU path (not from the data set).
    {
        "question": "Maya buys 3 packs of pencils with 12 pencils in each pack. She gives 7 "
        "pencils to her brother. How many pencils does she have left?",
        "answer": "Maya buys 3*12=<<3*12=36>>36 pencils.\nShe has 36-7=<<36-7=29>>29 pencils "
        "left.\n#### 29",
    },
    {
        "question": "A bakery sells muffins for $2.50 each. On Monday it sold 48 muffins and on "
        "Tuesday twice as many. How much money did it make on the two days?",
        "answer": "On Tuesday it sold 48*2=<<48*2=96>>96 muffins.\nIn total it sold "
        "48+96=<<48+96=144>>144 muffins.\nIt made 144*2.50=$<<144*2.5=360>>360.\n"
        "#### 360",
    },
    {
        "question": "Tom runs 5 kilometres every weekday and 8 kilometres on each day of the "
        "weekend. How many kilometres does he run in 4 weeks?",
        "answer": "On weekdays he runs 5*5=<<5*5=25>>25 km.\nOn the weekend he runs "
        "8*2=<<8*2=16>>16 km.\nEach week he runs 25+16=<<25+16=41>>41 km.\nIn 4 "
        "weeks he runs 41*4=<<41*4=164>>164 km.\n#### 164",
    },
    {
        "question": "A school has 1,250 students. 40% of them take the bus and 1/5 of the rest "
        "walk. The others are driven. How many students are driven to school?",
        "answer": "1250*0.4=<<1250*0.4=500>>500 students take the bus.\n"
        "1250-500=<<1250-500=750>>750 do not.\n750/5=<<750/5=150>>150 walk.\n"
        "750-150=<<750-150=600>>600 are driven.\n#### 600",
    },
    {
        "question": "Lena has $120. She spends a third of it on a jacket and $15 on lunch. How "
        "much money does she have left?",
        "answer": "The jacket costs 120/3=$<<120/3=40>>40.\nShe spends 40+15=$<<40+15=55>>55.\n"
        "She has 120-55=$<<120-55=65>>65 left.\n#### 65",
    },
    {
        "question": "A tank holds 300 litres. A pipe fills it at 12 litres per minute and a leak "
        "loses 2 litres per minute. How many minutes does it take to fill the empty "
        "tank?",
        "answer": "The tank gains 12-2=<<12-2=10>>10 litres per minute.\nIt takes "
        "300/10=<<300/10=30>>30 minutes.\n#### 30",
    },
    {
        "question": "Carlos earns $18 an hour. He works 6 hours a day for 5 days, and pays $95 "
        "for transport that week. How much does he keep?",
        "answer": "He works 6*5=<<6*5=30>>30 hours.\nHe earns 30*18=$<<30*18=540>>540.\nHe "
        "keeps 540-95=$<<540-95=445>>445.\n#### 445",
    },
    {
        "question": "The temperature was 4 degrees at noon and fell 3 degrees every hour for 5 "
        "hours. What was the temperature then?",
        "answer": "It fell 3*5=<<3*5=15>>15 degrees.\nIt was 4-15=<<4-15=-11>>-11 degrees.\n"
        "#### -11",
    },
    {
        "question": "A recipe needs 3/4 cup of sugar for 12 cookies. How many cups of sugar are "
        "needed for 30 cookies?",
        "answer": "Each cookie needs 0.75/12=<<0.75/12=0.0625>>0.0625 cups.\n30 cookies need "
        "30*0.0625=<<30*0.0625=1.875>>1.875 cups.\n#### 1.875",
    },
    {
        "question": "A farmer has 2,400 apples. He packs them in boxes of 25 and sells each box "
        "for $14. How much money does he make if he sells all the boxes?",
        "answer": "He fills 2400/25=<<2400/25=96>>96 boxes.\nHe makes "
        "96*14=$<<96*14=1344>>1,344.\n#### 1,344",
    },
)
