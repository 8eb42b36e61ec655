"""Rule text -> the `CodeCheck` that decides it, or None: regular expressions over natural phrasings.

Conservative: a rule maps only when its whole demand is one a program decides ("The response
should be under 60 words." maps; "... under 60 words and cite a source.", "... use bullet
points when listing options." and "... be concise." do not). A rule it is unsure of stays
with the LLM verifier.

How a rule is read: a subject and modal ("The assistant's response should", "Responses must",
"Answers need to") or an imperative ("Keep the answer under 50 words.", "Use bullet points.",
"Do not use commas."), then a demand, possibly negated ("not", "never", "avoid ...ing",
"refrain from ...ing"). A negated count bound flips its relation (not under 50 words = at
least 50 words); other negations set `CodeCheck.negate`.
"""

from __future__ import annotations

import re

from autorule.rules.checks.registry import CodeCheck

_SUBJECT = (r"(?:(?:the|a|an|each|every|any|your|its)\s+)?(?:entire\s+|whole\s+|full\s+|final\s+)?"
            r"(?:(?:assistant|ai|model|chatbot|bot)(?:'s|s'|s)?\s+)?(?:entire\s+|whole\s+|full\s+|final\s+)?"
            r"(?:response|reply|replies|answer|output|completion)s?")
_MODAL = r"(?:should|must|shall|will|needs?\s+to|has\s+to|have\s+to|ought\s+to|is\s+to|are\s+to|is\s+required\s+to|are\s+required\s+to)"
_STEM = re.compile(rf"^{_SUBJECT}\s+{_MODAL}\s+(?:always\s+)?", re.IGNORECASE)
_NEGATION = re.compile(r"^(?:(?:not|never)\s+(?:ever\s+)?|avoid\s+|refrain\s+from\s+)", re.IGNORECASE)
_IMPERATIVE_NEGATION = re.compile(r"^(?:do\s+not|don't|never|avoid|refrain\s+from)\s+", re.IGNORECASE)
# an imperative that names the response: "Keep the answer under 50 words", "Limit responses to 3 sentences"
_KEEP = re.compile(rf"^(?:keep|make)\s+{_SUBJECT}\s+", re.IGNORECASE)
_LIMIT = re.compile(rf"^(?:limit|restrict|cap)\s+{_SUBJECT}\s+to\s+", re.IGNORECASE)
_RESPOND = re.compile(r"^(?:respond|reply|answer|write)\s+", re.IGNORECASE)

_SMALL = {w: i for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"])}
_TENS = {w: 10 * i for i, w in enumerate(["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]) if w != "_"}
_NUMBER_WORD = "|".join(sorted([*_SMALL, *_TENS, "hundred", "thousand", "a", "and"], key=len, reverse=True))
NUMBER = rf"(?:\d{{1,3}}(?:,\d{{3}})+|\d+|(?:(?:{_NUMBER_WORD})[\s-]*)+?(?=\s))"


def parse_number(text: str) -> int | None:
    """A whole number written in digits ("1,000") or English words ("two hundred and fifty"); None if neither.

    Example:
        >>> parse_number("1,500"), parse_number("twenty-five"), parse_number("a hundred"), parse_number("several")
        (1500, 25, 100, None)
    """
    text = text.strip().lower()
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+|\d+", text):
        return int(text.replace(",", ""))
    total, current, seen = 0, 0, False
    for word in re.split(r"[\s-]+", text):
        if word in _SMALL:
            current += _SMALL[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = (current or 1) * 100
        elif word == "thousand":
            total, current = total + (current or 1) * 1000, 0
        elif word in ("a", "and"):
            continue
        else:
            return None
        seen = True
    return total + current if seen else None


# bounds: phrase -> (relation, offset): "under N" is less than N; "at most N" is less than N + 1; ...
_BOUNDS = [
    (r"fewer\s+than|less\s+than|under|below|shorter\s+than|no\s+more\s+than\s+and\s+not\s+including", ("less than", 0)),
    (r"(?:no|not)\s+more\s+than|at\s+most|(?:no|not)\s+longer\s+than|(?:a\s+)?max(?:imum)?(?:\s+of)?|up\s+to|within|(?:not\s+)?exceeding\s+no\s+more\s+than",
     ("less than", 1)),
    (r"at\s+least|(?:no|not)\s+(?:fewer|less|shorter)\s+than|(?:a\s+)?min(?:imum)?(?:\s+of)?", ("at least", 0)),
    (r"more\s+than|over|longer\s+than|greater\s+than|above|in\s+excess\s+of", ("at least", 1)),
]
_BOUND = "|".join(f"(?P<b{i}>{p})" for i, (p, _) in enumerate(_BOUNDS))
_UNITS = {"word": "words", "words": "words", "sentence": "sentences", "sentences": "sentences", "paragraph": "paragraphs",
          "paragraphs": "paragraphs"}
_UNIT = r"(?P<unit>words?|sentences?|paragraphs?)"
_LONG = r"(?:\s+(?:long|in\s+length|in\s+total|total|or\s+so))?"
_HAVE = r"(?:be|contain|have|use|include|consist\s+of|comprise|run|stay|remain|keep\s+(?:it|itself)|be\s+kept|be\s+limited\s+to|be\s+restricted\s+to)"
_COUNT_PATTERNS = [
    re.compile(rf"^(?:{_HAVE}\s+)?(?:{_BOUND})\s+(?P<n>{NUMBER})\s+{_UNIT}{_LONG}$", re.IGNORECASE),
    # "exceed 100 words": more than; its negation "not exceed" is at most
    re.compile(rf"^(?P<exceed>exceed|go\s+over|go\s+beyond)\s+(?:a\s+limit\s+of\s+)?(?P<n>{NUMBER})\s+{_UNIT}{_LONG}$", re.IGNORECASE),
    # "be 100 words or fewer", "be 200 words or more"
    re.compile(rf"^(?:{_HAVE}\s+)?(?P<n>{NUMBER})\s+{_UNIT}(?P<orless>\s+or\s+(?:fewer|less|shorter|under))?(?P<ormore>\s+or\s+(?:more|longer|above))?"
               rf"(?P<atmost>\s+(?:at\s+most|max(?:imum)?|at\s+the\s+most))?(?P<atleast>\s+(?:at\s+least|minimum|at\s+the\s+least))?{_LONG}$",
               re.IGNORECASE),
]
_RANGE = re.compile(rf"^(?:{_HAVE}\s+)?(?:between\s+)?(?P<a>{NUMBER})\s+(?:and|to|-)\s+(?P<b>{NUMBER})\s+words{_LONG}$", re.IGNORECASE)
_SINGLE = re.compile(r"^(?:be|consist\s+of|fit\s+in(?:to)?|be\s+written\s+(?:as|in))\s+(?:a\s+single|one|only\s+one|just\s+one|a\s+single,?\s+short)\s+"
                     r"(?P<unit>sentence|paragraph)$", re.IGNORECASE)


def _count_check(demand: str, negated: bool) -> CodeCheck | None:
    m = _RANGE.match(demand)
    if m:
        a, b = parse_number(m["a"]), parse_number(m["b"])
        if a is None or b is None or a > b:
            return None
        return CodeCheck(checker="autorule:word_range", params={"min_words": a, "max_words": b}, negate=negated)
    m = _SINGLE.match(demand)
    if m:
        relation, n = ("at least", 2) if negated else ("less than", 2)
        unit = m["unit"].lower() + "s"
        return _bound(unit, relation, n)
    for i, pattern in enumerate(_COUNT_PATTERNS):
        m = pattern.match(demand)
        if not m:
            continue
        n = parse_number(m["n"])
        if n is None:
            return None
        unit = _UNITS[m["unit"].lower()]
        if i == 0:
            which = next(j for j in range(len(_BOUNDS)) if m[f"b{j}"])
            relation, offset = _BOUNDS[which][1]
        elif i == 1:
            relation, offset = "at least", 1
        else:
            if m["orless"] or m["atmost"]:
                relation, offset = "less than", 1
            elif m["ormore"] or m["atleast"]:
                relation, offset = "at least", 0
            else:
                return None  # "be 100 words": exactly? about? left to the LLM
        if negated:  # not (count < n) is count >= n, and the reverse
            relation = "at least" if relation == "less than" else "less than"
        return _bound(unit, relation, n + offset)
    return None


def _bound(unit: str, relation: str, n: int) -> CodeCheck:
    if unit == "words":
        return CodeCheck(checker="length_constraints:number_words", params={"num_words": n, "relation": relation})
    key = "num_sentences" if unit == "sentences" else "num_paragraphs"
    return CodeCheck(checker=f"autorule:number_{unit}", params={key: n, "relation": relation})


_Q = "\"'\u201c\u201d\u2018\u2019"
_QUOTED = rf"[{_Q}](?P<phrase>[^{_Q}]{{1,80}})[{_Q}]"
_WORDS_LIST = rf"(?P<words>[{_Q}][^{_Q}]{{1,40}}[{_Q}](?:\s*(?:,|,?\s*and|,?\s*or)\s*[{_Q}][^{_Q}]{{1,40}}[{_Q}])*)"
_BULLETS = r"(?:bullet(?:ed)?[\s-]*points?|bullet(?:ed)?\s+lists?|bullets)"
_SHAPE = r"(?:(?:be\s+)?(?:formatted|written|presented|structured|organi[sz]ed|laid\s+out|given)\s+(?:as|in|with|using|in\s+the\s+form\s+of)|take\s+the\s+form\s+of|be\s+in\s+the\s+form\s+of)"
_HAS = r"(?:use|contain|include|have|feature|provide|present\s+(?:the\s+)?(?:answer|information|content)\s+(?:as|in|with)|be|consist\s+of)"
_ANY = r"(?:an?\s+|any\s+|one\s+or\s+more\s+|some\s+)?"
_ENTIRELY = r"(?:entirely\s+|completely\s+|fully\s+|only\s+|all\s+|wholly\s+)?"
_LANGUAGE_NAMES = None


def _language(name: str) -> str | None:
    from autorule.rules.checks.ifeval import languages

    global _LANGUAGE_NAMES
    if _LANGUAGE_NAMES is None:
        _LANGUAGE_NAMES = {v.lower(): k for k, v in languages().items()}
    return _LANGUAGE_NAMES.get(name.lower())


def _check(checker: str, negated: bool, **params) -> CodeCheck:
    return CodeCheck(checker=checker, params=params, negate=negated)


def _words(listed: str) -> list[str]:
    return [w.strip() for w in re.findall(rf"[{_Q}]([^{_Q}]+)[{_Q}]", listed) if w.strip()]


def _bullets(m: re.Match, negated: bool) -> CodeCheck:
    # "no bullet points" is IFEval's count of bullet lines at 0; "use bullet points" is at least one, its complement
    return _check("detectable_format:number_bullet_lists", False, num_bullets=0) if negated else _check("autorule:bullet_list", False, min_items=1)


def _counted_bullets(m: re.Match, negated: bool) -> CodeCheck | None:
    n = parse_number(m["n"])
    if n is None or negated:
        return None
    if m["exact"]:
        return _check("detectable_format:number_bullet_lists", False, num_bullets=n)
    return _check("autorule:bullet_list", False, min_items=n)


def _language_check(m: re.Match, negated: bool) -> CodeCheck | None:
    code = _language(m["lang"])
    return None if code is None else _check("language:response_language", negated, language=code)


# demand (lower-cased, no final full stop) -> a builder; each pattern must match the whole demand
_KINDS: list[tuple[re.Pattern, object]] = [(re.compile(p, re.IGNORECASE), f) for p, f in [
    # bullet points
    (rf"^(?:{_HAS}|{_SHAPE}|use\s+the\s+form\s+of)\s+{_ANY}(?:markdown\s+)?{_BULLETS}(?:\s+format)?$", _bullets),
    (r"^(?:be\s+)?(?:formatted|written|presented)\s+(?:as|in)\s+(?:a\s+)?(?:bulleted|bullet-point|bullet\s+point)\s+(?:list|format)$", _bullets),
    (rf"^(?:use|contain|include|have)\s+(?P<exact>exactly\s+)?(?:at\s+least\s+)?(?P<n>{NUMBER})\s+{_BULLETS}$", _counted_bullets),
    # numbered lists
    (rf"^(?:{_HAS}|{_SHAPE})\s+{_ANY}(?:numbered|ordered)\s+(?:list|steps|points|items)(?:\s+format)?$",
     lambda m, neg: _check("autorule:numbered_list", neg)),
    (r"^(?:number\s+(?:its|the)\s+steps|list\s+(?:its|the)\s+steps\s+as\s+a\s+numbered\s+list)$", lambda m, neg: _check("autorule:numbered_list", neg)),
    # code blocks
    (rf"^(?:{_HAS})\s+{_ANY}(?:fenced\s+)?code\s+blocks?(?:\s+(?:fenced|delimited|marked)\s+(?:with|by)\s+(?:triple\s+)?backticks(?:\s+\(```\))?)?$",
     lambda m, neg: _check("autorule:code_block", neg)),
    # headings
    ((rf"^(?:{_HAS}|be\s+organi[sz]ed\s+(?:under|with|into\s+sections\s+with))\s+{_ANY}(?:markdown\s+)?(?:section\s+)?(?:headings?|headers?)"
     r"(?:\s+\(a\s+line\s+starting\s+with\s+#\))?$"), lambda m, neg: _check("autorule:heading", neg)),
    # JSON
    (rf"^(?:be\s+)?(?:{_ENTIRELY}(?:formatted|written|given|returned|provided)\s+(?:as|in)\s+)?(?:a\s+)?(?:valid\s+)?json(?:\s+(?:format|object|only))?$",
     lambda m, neg: _check("detectable_format:json_format", neg)),
    (r"^(?:be|consist\s+(?:only|solely|entirely)\s+of)\s+(?:a\s+)?(?:valid\s+)?(?:json|a\s+json\s+object)$", lambda m, neg: _check("detectable_format:json_format", neg)),
    # capitals
    (rf"^(?:be\s+)?(?:written\s+|typed\s+)?{_ENTIRELY}in\s+(?:all\s+)?(?:capital\s+letters|capitals|upper\s*case(?:\s+letters)?|all[\s-]caps|caps|block\s+capitals)$",
     lambda m, neg: _check("change_case:english_capital", neg)),
    (rf"^(?:use|contain)\s+{_ENTIRELY}(?:capital|upper\s*case)\s+letters(?:\s+only)?$", lambda m, neg: _check("change_case:english_capital", neg)),
    # lowercase
    (rf"^(?:be\s+)?(?:written\s+|typed\s+)?{_ENTIRELY}in\s+(?:all\s+)?lower\s*case(?:\s+letters)?(?:,?\s+with\s+no\s+capital\s+letters)?$",
     lambda m, neg: _check("change_case:english_lowercase", neg)),
    (rf"^(?:use|contain)\s+{_ENTIRELY}lower\s*case\s+letters(?:\s+only)?$", lambda m, neg: _check("change_case:english_lowercase", neg)),
    (r"^(?:contain|use|include|have)\s+no\s+(?:capital|upper\s*case)\s+letters(?:\s+at\s+all)?$", lambda m, neg: None if neg else _check("change_case:english_lowercase", False)),
    (r"^(?:contain|use|include|have)\s+(?:any\s+)?(?:capital|upper\s*case)\s+letters(?:\s+at\s+all)?$", lambda m, neg: _check("change_case:english_lowercase", False) if neg else None),
    # commas
    (r"^(?:contain|use|include|have)\s+(?:any\s+)?commas?(?:\s+at\s+all)?$", lambda m, neg: _check("punctuation:no_comma", False) if neg else None),
    (r"^(?:contain|use|include|have)\s+no\s+commas?(?:\s+at\s+all)?$|^be\s+written\s+without\s+(?:any\s+|using\s+)?commas?$|^(?:using|use)\s+commas?$",
     lambda m, neg: (None if neg else _check("punctuation:no_comma", False)) if not m.group(0).lower().startswith("us") else (_check("punctuation:no_comma", False) if neg else None)),
    # quotation
    (rf"^(?:be\s+)?{_ENTIRELY}(?:wrapped|enclosed|surrounded|placed|put)\s+(?:in|with|within|inside|between)\s+(?:a\s+pair\s+of\s+)?double\s+quot(?:ation\s+marks|es|e\s+marks)$",
     lambda m, neg: _check("startend:quotation", neg)),
    # endings and beginnings
    (r"^(?:end|finish|close|conclude)\s+with\s+a\s+question(?:\s+mark|\s+to\s+the\s+user)?$", lambda m, neg: _check("autorule:ends_with_question", neg)),
    (rf"^(?:end|finish|close|conclude)\s+with\s+(?:the\s+(?:exact\s+)?(?:phrase|words?|sentence|line)\s+)?{_QUOTED}$",
     lambda m, neg: _check("startend:end_checker", neg, end_phrase=m["phrase"])),
    (rf"^(?:start|begin|open)\s+with\s+(?:the\s+(?:exact\s+)?(?:phrase|words?|sentence|line)\s+)?{_QUOTED}$",
     lambda m, neg: _check("autorule:starts_with", neg, phrase=m["phrase"])),
    # keywords (quoted, or a single word after "the word")
    (rf"^(?:mention|include|contain|use|say)\s+(?:the\s+(?:exact\s+)?(?:words?|phrases?|terms?|keywords?)\s+)?{_WORDS_LIST}(?:\s+(?:at\s+least\s+once|somewhere))?$",
     lambda m, neg: _check("keywords:forbidden_words", False, forbidden_words=_words(m["words"])) if neg
     else _check("keywords:existence", False, keywords=_words(m["words"]))),
    (r"^(?:mention|include|contain|use|say)\s+the\s+(?:word|term|keyword)\s+(?P<word>[a-z][\w-]*)$",
     lambda m, neg: _check("keywords:forbidden_words", False, forbidden_words=[m["word"]]) if neg else _check("keywords:existence", False, keywords=[m["word"]])),
    # language
    (rf"^(?:be\s+)?(?:written\s+|given\s+|provided\s+)?{_ENTIRELY}in\s+(?:the\s+)?(?P<lang>[a-z]+)(?:\s+language)?(?:\s+only)?$", _language_check),
    (r"^(?:use|be\s+in)\s+(?:the\s+)?(?P<lang>[a-z]+)\s+language(?:\s+only)?$", _language_check),
]]


def _demand(text: str) -> tuple[str, bool] | None:
    """The demand of a rule, lower-cased and without its final full stop, and whether it is negated; None
    when the rule does not read as "<the response> <should> ..." or an imperative."""
    text = " ".join(text.strip().split()).rstrip(".!").strip()
    m = _STEM.match(text)
    if m:
        demand = text[m.end():]
        neg = _NEGATION.match(demand)
        return (demand[neg.end():], True) if neg else (demand, False)
    for pattern, prefix in ((_KEEP, ""), (_LIMIT, "be at most ")):
        m = pattern.match(text)
        if m:
            return prefix + text[m.end():], False
    neg = _IMPERATIVE_NEGATION.match(text)
    if neg:
        text = text[neg.end():]
    m = _RESPOND.match(text)
    if m:  # "Respond in French", "Answer in under 50 words"
        rest = text[m.end():]
        rest = re.sub(r"^(?:in|with|using)\s+(?=(?:fewer|less|under|no|not|at|more|over|between|a|one|only|just|\d))", "", rest, flags=re.IGNORECASE)
        return ("be " + rest if not rest.lower().startswith(("in ", "with ", "using ")) else "be written " + rest), bool(neg)
    return text, bool(neg)


def recognise(text: str) -> CodeCheck | None:
    """The check that decides a rule, or None when no program can (or the rule is not plainly one).

    Args:
        text: the rule, e.g. "The response should be under 60 words."

    Example:
        >>> recognise("The response should be under 60 words.").params
        {'num_words': 60, 'relation': 'less than'}
        >>> recognise("The assistant's response must not exceed 100 words.").params
        {'num_words': 101, 'relation': 'less than'}
        >>> recognise("The response should be concise.") is None
        True
    """
    got = _demand(text)
    if got is None:
        return None
    demand, negated = got
    demand = demand.strip().rstrip(",;:").strip()
    if demand.lower().startswith(("not ", "never ")):  # "should never not ...": read no further
        return None
    if negated and demand.lower().startswith(("using ", "including ", "mentioning ", "writing ", "ending ", "starting ", "beginning ")):
        demand = {"using": "use", "including": "include", "mentioning": "mention", "writing": "be written", "ending": "end",
                  "starting": "start", "beginning": "begin"}[demand.split()[0].lower()] + demand[demand.index(" "):]
    check = _count_check(demand, negated)
    if check is not None:
        return check
    for attempt in (demand, "use " + demand) if negated else (demand,):  # "avoid bullet points": avoid using them
        for pattern, build in _KINDS:
            m = pattern.match(attempt)
            if m:
                return build(m, negated)
    return None
