"""A small support-call language model, built at start-up as ARPA text for pocketsphinx.

pocketsphinx's general English model spreads its probability over 130,000 words, so short,
synthetic or telephone-band caller turns come back as near-misses ("what oh no here"). A
trigram model over the phrases a support caller actually says (opening hours, order numbers
spoken digit by digit, appointments, a person, yes/no, goodbye), plus the words of the
session's declared tools, keeps the search among words the local model can act on. The
recogniser weighs its result against the general model's, so other speech is still heard.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

SUPPORT_PHRASES: tuple[str, ...] = (
    # opening hours
    "what are your opening hours", "what are your hours", "when are you open", "are you open today",
    "are you open tomorrow", "are you open on saturday", "are you open on sunday", "what time do you open",
    "what time do you close", "when do you close today", "what are your business hours",
    "how late are you open", "opening times please",
    # orders
    "where is my order", "i want to check my order", "i want to check the status of my order",
    "what is the status of my order", "order status please", "my order has not arrived",
    "i am calling about my order", "i have a question about my order", "track my order",
    "where is my package", "my delivery is late", "when will my order arrive", "my order number is",
    "the order number is", "the number is", "it is order number",
    # appointments
    "i would like to book an appointment", "i want to book an appointment", "can i book an appointment",
    "can i schedule an appointment", "i need an appointment", "book an appointment for tomorrow",
    "book an appointment for today", "i would like to make an appointment", "reschedule my appointment",
    "cancel my appointment", "tomorrow at ten", "today at two", "at nine in the morning",
    "at three in the afternoon", "at ten am", "at four pm", "next week",
    # a person
    "can i talk to a person", "can i speak to a person", "i want to talk to a person please",
    "i want to speak to a human", "let me talk to an agent", "can i speak to someone",
    "put me through to an operator", "i need a real person", "connect me to a representative",
    "talk to a human please", "speak to an agent",
    # yes, no, repeat, thanks, greetings, goodbye
    "yes", "yes please", "yes that is right", "yeah", "yep", "sure", "okay", "correct", "that is correct",
    "no", "no thanks", "no thank you", "no that is all", "nope", "not really", "that is all",
    "can you repeat that", "could you repeat that please", "sorry say that again", "say that again",
    "pardon", "what did you say", "i did not catch that", "please repeat",
    "thank you", "thanks", "thank you very much", "thanks a lot",
    "hello", "hi", "hi there", "hello there", "good morning", "good afternoon", "good evening",
    "goodbye", "bye", "bye bye", "okay bye", "thank you goodbye", "have a nice day", "see you",
    "wait", "stop", "hold on", "one moment please", "i have a question", "help", "i need help",
)


def digit_runs() -> list[str]:
    """Digit sequences in which every ordered pair of digits occurs (a de Bruijn sequence)."""
    order: list[int] = []
    seen: set[tuple[int, int]] = set()
    current = 0
    order.append(current)
    while len(seen) < 100:
        nxt = next((d for d in range(9, -1, -1) if (current, d) not in seen), None)
        if nxt is None:
            break
        seen.add((current, nxt))
        order.append(nxt)
        current = nxt
    words = [DIGITS[d] for d in order]
    return [" ".join(words[i:i + 6]) for i in range(0, len(words), 5)]


def words_of(text: str) -> list[str]:
    """Lower-case words with digits spelled out and identifiers split ("lookupOrder" -> lookup order)."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    spaced = re.sub(r"(\d)", r" \1 ", spaced)
    out: list[str] = []
    for word in re.findall(r"[a-z0-9']+", spaced.lower()):
        out.append(DIGITS[int(word)] if word.isdigit() else word.strip("'"))
    return [w for w in out if w]


def tool_phrases(tools: Iterable[dict[str, Any]]) -> list[str]:
    """What a caller might say to reach the declared tools: names, descriptions, enum values."""
    phrases: list[str] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        phrases.append(" ".join(words_of(str(tool.get("name") or ""))))
        phrases.extend(_sentences(str(tool.get("description") or "")))
        params = tool.get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        for name, spec in (props if isinstance(props, dict) else {}).items():
            spec = spec if isinstance(spec, dict) else {}
            phrases.append(" ".join(words_of(str(name))))
            phrases.extend(_sentences(str(spec.get("description") or "")))
            for option in spec.get("enum") or []:
                phrases.append(" ".join(words_of(str(option))))
    return [p for p in phrases if p]


def _sentences(text: str) -> list[str]:
    return [" ".join(words_of(part)) for part in re.split(r"[.;:!?\n]+", text) if part.strip()]


def corpus(tools: Iterable[dict[str, Any]] = (), extra: Iterable[str] = ()) -> list[list[str]]:
    """Training sentences as word lists."""
    texts = list(SUPPORT_PHRASES) + digit_runs() + tool_phrases(tools) + [" ".join(words_of(e)) for e in extra]
    return [words for words in (t.split() for t in texts) if words]


def arpa(sentences: list[list[str]], known: set[str] | None = None, *, fillers: dict[str, float] | None = None,
         filler_mass: float = 0.3, discount: float = 0.1) -> str:
    """A backed-off trigram model in ARPA text (absolute discounting), over words in `known`.

    `fillers` (word -> relative frequency) are everyday words reachable only as unigrams,
    holding `filler_mass` of the unigram probability: speech that is not about the domain
    is then heard as everyday words instead of being forced onto keywords.
    """
    ngrams: list[Counter[tuple[str, ...]]] = [Counter(), Counter(), Counter()]
    for words in sentences:
        if known is not None:
            words = [w for w in words if w in known]
        if not words:
            continue
        padded = ["<s>", *words, "</s>"]
        for n in range(1, 4):
            for i in range(len(padded) - n + 1):
                gram = tuple(padded[i:i + n])
                if n == 1 or gram[0] != "</s>":
                    ngrams[n - 1][gram] += 1
    unigrams = ngrams[0]
    domain = sorted(w for (w,) in unigrams if w != "<s>")
    total = sum(c for (w,), c in unigrams.items() if w != "<s>")
    fillers = {w: f for w, f in (fillers or {}).items() if f > 0 and (known is None or w in known)}
    mass = filler_mass if fillers else 0.0
    prob: dict[tuple[str, ...], float] = {
        (w,): (1.0 - mass) * (unigrams[(w,)] + 1) / (total + len(domain)) for w in domain}
    weight = sum(fillers.values())
    for word, freq in fillers.items():
        prob[(word,)] = prob.get((word,), 0.0) + mass * freq / weight
    vocab = sorted(w for (w,) in prob)
    backoff: dict[tuple[str, ...], float] = {}
    for n in (2, 3):
        history: Counter[tuple[str, ...]] = Counter()
        followers: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        for gram, count in ngrams[n - 1].items():
            history[gram[:-1]] += count
            followers.setdefault(gram[:-1], []).append(gram)
        for gram, count in ngrams[n - 1].items():
            prob[gram] = (count - discount) / history[gram[:-1]]
        for hist, seen in followers.items():
            left = 1.0 - sum(prob[g] for g in seen)
            lower = 1.0 - sum(_lower(prob, backoff, g[1:]) for g in seen)
            backoff[hist] = left / lower if lower > 1e-9 else 1.0
    lines = ["\\data\\"]
    unigram_list: list[tuple[str, ...]] = [("<s>",), *((w,) for w in vocab)]
    order_grams = [unigram_list, sorted(ngrams[1]), sorted(ngrams[2])]
    for n, grams in enumerate(order_grams, 1):
        lines.append(f"ngram {n}={len(grams)}")
    for n, grams in enumerate(order_grams, 1):
        lines.append("")
        lines.append(f"\\{n}-grams:")
        for gram in grams:
            p = -99.0 if gram == ("<s>",) else math.log10(prob[gram])
            line = f"{p:.4f} {' '.join(gram)}"
            if n < 3 and gram in backoff:
                line += f" {math.log10(max(backoff[gram], 1e-9)):.4f}"
            lines.append(line)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def _lower(prob: dict[tuple[str, ...], float], backoff: dict[tuple[str, ...], float], gram: tuple[str, ...]) -> float:
    """P(gram[-1] | gram[:-1]) under the lower orders, backing off where unseen."""
    if gram in prob:
        return prob[gram]
    if len(gram) == 1:
        return 0.0
    return backoff.get(gram[:-1], 1.0) * _lower(prob, backoff, gram[1:])
