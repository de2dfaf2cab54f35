"""``arith``: multi-digit multiplication with worked long-multiplication rationales.

The benchmark on which implicit chain-of-thought was introduced (Deng et al. 2023,
"Implicit Chain of Thought Reasoning via Knowledge Distillation", arXiv:2311.01460: 4x4
and 5x5 digit multiplication, GPT-2 students; the same data is reused by Deng et al. 2024,
"From Explicit CoT to Implicit CoT", arXiv:2405.14838, up to 20x20). Their rationale is
long multiplication: the first factor times each digit of the second factor (from the ones
digit up), each partial product shifted to its place, and the running sum.

Format decision. Deng et al. write every number with its digits **reversed** (least
significant first) and space-separated, e.g. ``1 3 4 5 * 8 1 9 3||8 4 4 3 4 + 0 1 3 4 5 0
( 8 5 7 7 9 0 ) + ... #### 8 5 6 8 7 2 1 2`` for 5431 * 3918 (data files of
github.com/da03/implicit_chain_of_thought), because a model trained from scratch then
produces digits in the order in which carries are resolved. We do **not** follow that in
the default text, and say so here: our students are pretrained instruct LMs (SmolLM2) whose
tokenizer and prior know numbers in normal order, the answer must be readable by lm-eval's
GSM8K regexes (``#### (\\-?[0-9\\.\\,]+)``), and the ``gsm8k`` suite compares with GSM8K
itself. The rationale carries the same steps as theirs, in normal digit order::

    Multiply 5431 by each digit of 3918, starting from the ones digit.
    5431 * 8 = 43448
    5431 * 1 * 10 = 54310
    5431 * 9 * 100 = 4887900
    5431 * 3 * 1000 = 16293000
    Add the partial products.
    43448 + 54310 = 97758
    97758 + 4887900 = 4985658
    4985658 + 16293000 = 21278658
    #### 21278658

(partial products first, then the running sums; Deng et al. interleave
them). :func:`to_icot_line` renders the same problem in Deng et al.'s exact reversed-digit
line format, verified against lines of their released test file in our tests, for anyone
reproducing their setup.

Why step style ``"digits"`` (docs/measurements/gsm8k.md): SmolLM2-135M-Instruct fine-tuned
on 1,200 rationales of the style above (150 steps) learnt the format and every running
sum, but wrote wrong partial products (a 3-digit number times one digit, in one step) and
scored 5% on 3x3 test items. ``style="digits"`` (dataset ids ``offline/arith-AxB-digits``)
breaks each partial product into one-digit products, each a times-table fact followed by
its zeros, summed pairwise, so every step is a fact or a two-number addition::

    Multiply 872 by each digit of 48, starting from the ones digit.
    872 * 8 = 6400 + 560 + 16 = 6960 + 16 = 6976
    872 * 4 * 10 = 32000 + 2800 + 80 = 34800 + 80 = 34880
    Add the partial products.
    6976 + 34880 = 41856
    #### 41856

(the terms run over the digits of the first factor from the most significant; a factor of
one digit has a single term and no sums). :func:`rationale_errors` checks both styles.

Operands: a ``d``-digit factor is uniform over ``[10^(d-1), 10^d - 1]`` (no leading zero;
trailing zeros allowed, as in their data). Splits are fixed and independent of ``seed`` and
``n``: an unordered pair {a, b} is a test pair iff the SHA-256 of ``"arith:min*max"`` falls
in the first ``TEST_FRACTION`` of the hash range, so no (a, b) pair nor its swap (b, a) can
appear on both sides, whatever seeds and sizes the train and test sets are drawn with.
Within a split, items are drawn with ``random.Random`` seeded by a string (stable across
Python runs and platforms), without repeated pairs.
"""

from __future__ import annotations

import hashlib
import random
import re

from bench.reasoning.problem import Problem

TEST_FRACTION = 0.3
SPLITS = ("train", "test")
STYLES = ("partial", "digits")
HEADER = "Multiply {a} by each digit of {b}, starting from the ones digit."
SUM_HEADER = "Add the partial products."
QUESTION = "What is {a} * {b}?"

_QUESTION_RE = re.compile(r"What is (\d+) \* (\d+)\?")
_PARTIAL_RE = re.compile(r"(\d+) \* (\d)(?: \* (10+))? = (\d+(?: [+=] \d+)*)")
_SUM_RE = re.compile(r"(\d+) \+ (\d+) = (\d+)")


def pair_split(a: int, b: int, test_fraction: float = TEST_FRACTION) -> str:
    """``"test"`` or ``"train"`` for the unordered pair {a, b} (hash-based, fixed)."""
    lo, hi = sorted((a, b))
    digest = hashlib.sha256(f"arith:{lo}*{hi}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def partial_products(a: int, b: int) -> list[tuple[int, int, int]]:
    """``[(digit, place, a * digit * place), ...]`` over the digits of ``b``, ones digit first."""
    return [(int(d), 10**i, a * int(d) * 10**i) for i, d in enumerate(reversed(str(b)))]


def digit_terms(a: int, digit: int, place: int) -> list[int]:
    """``a * digit * place`` as one-digit products, most significant digit of ``a`` first."""
    return [int(x) * 10**i * digit * place for i, x in reversed(list(enumerate(reversed(str(a)))))]


def pairwise_sum_text(terms: list[int]) -> str:
    """``"t1 + t2 + t3 = (t1+t2) + t3 = total"``: the terms, then left-to-right partial sums."""
    steps = [" + ".join(map(str, terms))]
    for i in range(1, len(terms)):
        steps.append(" + ".join(map(str, [sum(terms[: i + 1]), *terms[i + 1:]])))
    return " = ".join(steps)


def rationale_text(a: int, b: int, style: str = "partial") -> str:
    """The worked long-multiplication rationale for ``a * b`` (without the ``####`` line)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    lines = [HEADER.format(a=a, b=b)]
    parts = partial_products(a, b)
    for digit, place, value in parts:
        head = f"{a} * {digit}" if place == 1 else f"{a} * {digit} * {place}"
        if style == "digits" and len(str(a)) > 1:
            lines.append(f"{head} = {pairwise_sum_text(digit_terms(a, digit, place))}")
        else:
            lines.append(f"{head} = {value}")
    if len(parts) > 1:
        lines.append(SUM_HEADER)
        total = parts[0][2]
        for _, _, value in parts[1:]:
            lines.append(f"{total} + {value} = {total + value}")
            total += value
    return "\n".join(lines)


def make_problem(a: int, b: int, *, split: str = "", style: str = "partial") -> Problem:
    """One ``arith`` item for ``a * b`` (rationale in ``style``, see the module docstring)."""
    da, db = len(str(a)), len(str(b))
    tail = "" if style == "partial" else f"-{style}"
    return Problem(id=f"arith-{da}x{db}{tail}-{a}x{b}", question=QUESTION.format(a=a, b=b),
                   rationale=rationale_text(a, b, style), answer=str(a * b), split=split,
                   source=f"arith-{da}x{db}{tail}", a=a, b=b)


def make_arith(digits_a: int, digits_b: int, n: int, seed: int = 0, *,
               split: str = "train", test_fraction: float = TEST_FRACTION,
               style: str = "partial") -> list[Problem]:
    """``n`` distinct ``digits_a`` x ``digits_b`` multiplication problems of one split.

    Deterministic in (digits_a, digits_b, n, seed, split); a larger ``n`` extends a smaller
    one (same prefix). Raises ValueError when the split holds fewer than ``n`` pairs.
    """
    if digits_a < 1 or digits_b < 1:
        raise ValueError(f"digits must be >= 1, got {digits_a}x{digits_b}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"distillbench-arith:{digits_a}x{digits_b}:{split}:{seed}")
    lo_a, hi_a = 10 ** (digits_a - 1), 10**digits_a - 1
    lo_b, hi_b = 10 ** (digits_b - 1), 10**digits_b - 1
    seen: set[tuple[int, int]] = set()
    out: list[Problem] = []
    attempts, max_attempts = 0, 200 * n + 10_000
    while len(out) < n:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(f"could draw only {len(out)} of {n} distinct {digits_a}x{digits_b} "
                             f"{split} pairs; ask for fewer")
        a, b = rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)
        key = (min(a, b), max(a, b))
        if key in seen or pair_split(a, b, test_fraction) != split:
            continue
        seen.add(key)
        out.append(make_problem(a, b, split=split, style=style))
    return out


def arith_splits(digits_a: int, digits_b: int, n_train: int, n_test: int,
                 seed: int = 0, style: str = "partial") -> tuple[list[Problem], list[Problem]]:
    """(train, test) problem lists; disjoint by construction (see the module docstring).
    The style changes the rationales only: both styles draw the same pairs."""
    return (make_arith(digits_a, digits_b, n_train, seed, split="train", style=style),
            make_arith(digits_a, digits_b, n_test, seed, split="test", style=style))


def rationale_errors(problem: Problem) -> list[str]:
    """Every arithmetic or structural error in ``problem``'s rationale (empty: all correct).

    Checked from the text alone: the question names the factors; one partial-product line
    per digit of the second factor, in order from the ones digit, each with the right digit,
    place value and product; then running sums, each adding the next partial product to the
    previous total; the last total (or the only partial product) equals the ``####`` answer,
    which equals the true product. Any other line is an error.
    """
    errors: list[str] = []
    m = _QUESTION_RE.fullmatch(problem.question.strip())
    if not m:
        return [f"question {problem.question!r} is not 'What is A * B?'"]
    a, b = int(m.group(1)), int(m.group(2))
    if (problem.a, problem.b) not in ((None, None), (a, b)):
        errors.append(f"question factors {a}, {b} differ from the item's {problem.a}, {problem.b}")
    lines = [ln.strip() for ln in problem.rationale.splitlines() if ln.strip()]
    if lines and lines[0] == HEADER.format(a=a, b=b):
        lines = lines[1:]
    digits = [int(d) for d in reversed(str(b))]
    partials: list[int] = []
    totals: list[int] = []
    in_sums = False
    for ln in lines:
        if ln == SUM_HEADER and not in_sums:
            in_sums = True
            continue
        pm, sm = _PARTIAL_RE.fullmatch(ln), _SUM_RE.fullmatch(ln)
        if pm and not in_sums:
            i = len(partials)
            f, d, place = int(pm.group(1)), int(pm.group(2)), int(pm.group(3) or 1)
            value, chain_errors = _check_chain(pm.group(4), f, d, place)
            errors += [f"partial {i + 1}: {e}" for e in chain_errors]
            if i >= len(digits):
                errors.append(f"extra partial product {ln!r}: {b} has {len(digits)} digits")
            else:
                if f != a:
                    errors.append(f"partial {i + 1}: multiplies {f}, not {a}")
                if d != digits[i]:
                    errors.append(f"partial {i + 1}: digit {d}, but digit {i + 1} of {b} from "
                                  f"the right is {digits[i]}")
                if place != 10**i:
                    errors.append(f"partial {i + 1}: place value {place}, expected {10**i}")
            if f * d * place != value:
                errors.append(f"partial {i + 1}: {ln!r} is wrong ({f * d * place})")
            partials.append(value)
        elif sm and in_sums:
            k = len(totals)
            left, right, result = (int(g) for g in sm.groups())
            expected_left = totals[-1] if totals else (partials[0] if partials else None)
            if left != expected_left:
                errors.append(f"sum {k + 1}: starts from {left}, expected {expected_left}")
            if k + 1 < len(partials) and right != partials[k + 1]:
                errors.append(f"sum {k + 1}: adds {right}, expected partial product "
                              f"{partials[k + 1]}")
            if left + right != result:
                errors.append(f"sum {k + 1}: {ln!r} is wrong ({left + right})")
            totals.append(result)
        else:
            errors.append(f"unexpected line {ln!r}")
    if len(partials) != len(digits):
        errors.append(f"{len(partials)} partial products for the {len(digits)} digits of {b}")
    if len(totals) != max(len(partials) - 1, 0):
        errors.append(f"{len(totals)} running sums for {len(partials)} partial products")
    final = totals[-1] if totals else (partials[0] if partials else None)
    if str(final) != problem.answer:
        errors.append(f"last step gives {final}, but the answer is {problem.answer}")
    if problem.answer != str(a * b):
        errors.append(f"answer {problem.answer} is not {a} * {b} = {a * b}")
    return errors


def _check_chain(rhs: str, f: int, d: int, place: int) -> tuple[int, list[str]]:
    """(final value, errors) of a partial product's right-hand side: either the value
    alone, or the ``"digits"`` chain ``terms = pairwise sums = value`` (each link must keep
    the sum, each step add the first two numbers, the terms be the one-digit products)."""
    links = [[int(x) for x in part.split(" + ")] for part in rhs.split(" = ")]
    value = links[-1][0] if len(links[-1]) == 1 else sum(links[-1])
    if len(links) == 1 and len(links[0]) == 1:
        return value, []
    errors = []
    if len(links[-1]) != 1:
        errors.append(f"{rhs!r} does not end in a single value")
    if links[0] != digit_terms(f, d, place):
        errors.append(f"terms {links[0]} are not the one-digit products "
                      f"{digit_terms(f, d, place)}")
    for prev, nxt in zip(links, links[1:], strict=False):
        if len(prev) < 2 or nxt != [prev[0] + prev[1], *prev[2:]]:
            errors.append(f"step {' + '.join(map(str, prev))} -> "
                          f"{' + '.join(map(str, nxt))} is wrong")
    return value, errors


def verify_rationale(problem: Problem) -> bool:
    """True iff every step of the rationale is arithmetically right (:func:`rationale_errors`)."""
    return not rationale_errors(problem)


def _rev(value: int, width: int) -> str:
    """``value`` zero-padded to ``width`` digits, reversed, space-separated (Deng et al.)."""
    return " ".join(reversed(str(value).zfill(width)))


def to_icot_line(problem: Problem) -> str:
    """Deng et al. (2023)'s line format: ``A * B||partials and sums #### product``.

    All numbers reversed (ones digit first) and space-separated; partial product ``i``
    (0-based, already shifted) and the running sum after it are padded to ``len(A) + 1 + i``
    digits, the product to ``len(A) + len(B)``; sums appear between partial products, the
    final sum is the answer itself.
    """
    if problem.a is None or problem.b is None:
        raise ValueError(f"{problem.id} is not an arith item")
    a, b = problem.a, problem.b
    da, db = len(str(a)), len(str(b))
    parts = [value for _, _, value in partial_products(a, b)]
    cot = [_rev(parts[0], da + 1)]
    total = parts[0]
    for i, value in enumerate(parts[1:], start=1):
        cot.append(f"+ {_rev(value, da + 1 + i)}")
        total += value
        if i < len(parts) - 1:
            cot.append(f"( {_rev(total, da + 1 + i)} )")
    return f"{_rev(a, da)} * {_rev(b, db)}||{' '.join(cot)} #### {_rev(a * b, da + db)}"
