"""Prompts for each content type, built from a GenerationRequest.

The learner's preferences (language, level, style, focus) shape every prompt; the
output format is fixed here, because the provider parses what comes back."""

from generation.providers.base import GenerationRequest, Messages

# Preference values are validated by the API (known keys, bounded length); this
# default applies when a roadmap never said.
DEFAULT_LEVEL = "beginner"

SYSTEM_PROMPT = (
    "You are an expert teacher who writes accurate, practical learning material for one "
    "concept of a learning roadmap. Stay on the concept; do not invent facts or links."
)


def language_name(language: str) -> str:
    """A name the model understands for a BCP 47 tag; zh-* means Simplified Chinese
    unless it names Traditional (DESIGN §5 uses Simplified for every zh tag)."""
    tag = language.strip().lower()
    if tag in {"zh-tw", "zh-hk", "zh-hant"}:
        return "Traditional Chinese (zh-Hant)"
    if tag.startswith("zh"):
        return "Simplified Chinese (zh-Hans)"
    return f"the language with the BCP 47 tag {language!r}"


def _context(request: GenerationRequest) -> str:
    preferences = request.preferences
    lines = [
        f"Roadmap: {request.roadmap_title}",
        f"Learner's goal: {request.roadmap_goal or request.roadmap_title}",
        f"Concept: {request.concept_name}",
    ]
    if request.concept_description:
        lines.append(f"Concept description: {request.concept_description}")
    lines.append(f"Learner's level: {preferences.get('level') or DEFAULT_LEVEL}")
    if preferences.get("style"):
        lines.append(f"Preferred style: {preferences['style']}")
    if preferences.get("focus"):
        lines.append(f"Focus on: {preferences['focus']}")
    lines.append(f"Write every human-readable text in {language_name(request.language)}.")
    return "\n".join(lines)


def _messages(request: GenerationRequest, task: str) -> Messages:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{_context(request)}\n\n{task}"},
    ]


def tutorial_messages(request: GenerationRequest) -> Messages:
    """The tutorial is plain Markdown: a level-1 title, a one-paragraph summary,
    then the body (parsed by generation.providers.output.parse_tutorial)."""
    return _messages(
        request,
        "Write a tutorial for this concept in Markdown, about 800 to 1500 words.\n"
        "Format, exactly:\n"
        "1. The first line is a level-1 heading with the tutorial's title (`# Title`).\n"
        "2. Then one blank line and a single summary paragraph of one to three sentences.\n"
        "3. Then the tutorial body with `##` sections, short code examples where useful, "
        "and a closing exercise.\n"
        "Answer with the Markdown only, without a surrounding code fence.",
    )


def resources_messages(request: GenerationRequest) -> Messages:
    return _messages(
        request,
        "Recommend 3 to 8 learning resources for this concept, best first: official "
        "documentation, articles, videos, courses, books or exercises that really exist. "
        "Use only stable, well-known URLs (https). For each give a title, the URL, its type, "
        "a one-sentence description saying why it helps, and an estimate of the minutes "
        "needed. Answer with JSON matching the given schema.",
    )


def quiz_messages(request: GenerationRequest) -> Messages:
    return _messages(
        request,
        "Write a quiz of 5 questions that checks understanding of this concept, at the "
        "learner's level. Mix single_choice, multiple_choice and true_false questions. "
        "question_id is q1, q2, ...; options lists the choices (for true_false: the words "
        "for true and false); correct_answers are zero-based indexes into options (exactly "
        "one, except for multiple_choice); explain the answer; difficulty is easy, medium "
        "or hard. Answer with JSON matching the given schema.",
    )


# A re-ask quotes what was wrong, cut to this many UTF-8 bytes, so that the tokens
# it adds are bounded (generation.budgets reserves them).
REASK_PROBLEM_MAX_BYTES = 400


def reask_message(problem: str) -> dict[str, str]:
    """Appended after an unusable answer, so the next attempt knows what to fix."""
    problem = problem.encode()[:REASK_PROBLEM_MAX_BYTES].decode(errors="ignore")
    return {
        "role": "user",
        "content": f"Your previous answer could not be used ({problem}). "
        "Answer again, following the requested format exactly.",
    }
