"""Recommendation prompts for causal LMs: the S-DPO question, chat templates, answer parsing.

* :class:`PromptTemplate` -- the S-DPO/LLaRA prompt shape: the user's watched titles, then (when
  there is a candidate list) the candidate titles, asking for one title
  (Chen et al., "On Softmax Direct Preference Optimization for Recommendation", NeurIPS 2024, Sec. 4:
  ``x_u`` = "After watching [History], which movie ... will the person choose next from [Item List]?").
* :func:`render_prompt` -- an instruct model sees that question as a *user turn* of its own chat
  template (``tokenizer.chat_template``: from the tokenizer, or from the GGUF metadata key
  ``tokenizer.chat_template``, see :mod:`fcpo.llm.models`), with the generation prompt of the
  assistant turn appended; a model without a chat template (the tiny GPT-2) gets the plain text
  ending in ``" Answer:"``.
* :func:`parse_answers` -- S-DPO's evaluation rule: an answer is *valid* when exactly one candidate
  title occurs in it, a *hit* (HR@1) when it is valid and the target title occurs in it
  (:func:`fcpo.metrics.candidates.text_choice` implements the rule).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["PromptTemplate", "CHAT_TEMPLATE", "chat_template_of", "render_prompt", "answer_prefix",
           "ParsedAnswers", "parse_answers"]


@dataclass(frozen=True)
class PromptTemplate:
    """Prompt pieces; titles in the history and candidate lists are quoted and comma-separated.

    ``answer`` is the plain-text answer cue; it is left out when the question is rendered as a chat
    user turn (the chat template's assistant turn is the cue there).
    """

    history: str = "The user watched: {history}."
    question_candidates: str = " Which movie will the user choose next from: {candidates}?"
    question: str = " Which movie will the user choose next?"
    answer: str = " Answer:"
    separator: str = ", "
    quote: str = '"'

    def _list(self, titles: Sequence[str]) -> str:
        return self.separator.join(f"{self.quote}{t}{self.quote}" for t in titles)

    def question_text(self, history_titles: Sequence[str], candidate_titles: Sequence[str] | None = None) -> str:
        """The question without the answer cue (the user turn of a chat prompt)."""
        text = self.history.format(history=self._list(history_titles))
        if candidate_titles is not None:
            return text + self.question_candidates.format(candidates=self._list(candidate_titles))
        return text + self.question

    def build(self, history_titles: Sequence[str], candidate_titles: Sequence[str] | None = None) -> str:
        """The plain-text prompt: question + answer cue."""
        return self.question_text(history_titles, candidate_titles) + self.answer

    @staticmethod
    def answer_text(title: str) -> str:
        """The answer continuation scored and generated after a plain-text prompt."""
        return " " + title


#: The S-DPO question worded for an instruct model's user turn (asks for exactly one listed title).
CHAT_TEMPLATE = PromptTemplate(
    history="This user has watched the following movies, in order: {history}.",
    question_candidates=(" Which movie will the user watch next? Choose exactly one of these candidate movies: "
                         "{candidates}. Answer with the title only."),
    question=" Which movie will the user watch next? Answer with one movie title only.",
    answer="",
)


def chat_template_of(tokenizer) -> str | None:
    """The tokenizer's Jinja chat template, or None when it has none (base models, the tiny GPT-2)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default")
    return template or None


def render_prompt(tokenizer, question: str, system: str | None = None, chat: bool | None = None) -> str:
    """The text fed to the model for one question.

    ``chat`` None: use the chat template when the tokenizer has one.  With it, the question is the
    user turn (after an optional ``system`` turn) and the assistant's generation prompt is appended;
    without it the question is returned unchanged.
    """
    use_chat = chat_template_of(tokenizer) is not None if chat is None else chat
    if not use_chat:
        return question
    if chat_template_of(tokenizer) is None:
        raise ValueError("chat=True but the tokenizer has no chat_template; set tokenizer.chat_template "
                         "or pass chat=False")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def answer_prefix(chat: bool) -> str:
    """What precedes a title in the answer: nothing after a chat generation prompt, a space after ``Answer:``."""
    return "" if chat else " "


@dataclass(frozen=True)
class ParsedAnswers:
    """Per-answer results of S-DPO's evaluation rule (arrays of length n)."""

    choice: np.ndarray  #: index into the candidate list of the one title found, -1 if not exactly one
    valid: np.ndarray   #: exactly one candidate title occurs in the answer
    hit: np.ndarray     #: valid and the target title occurs in the answer (all False without targets)

    @property
    def valid_ratio(self) -> float:
        return float(self.valid.mean()) if self.valid.size else 0.0

    @property
    def hr1(self) -> float:
        return float(self.hit.mean()) if self.hit.size else 0.0


def parse_answers(texts: Sequence[str], candidate_titles: Sequence[Sequence[str]],
                  targets: Sequence[str] | None = None) -> ParsedAnswers:
    """Parse generated answers against their candidate lists (S-DPO rule, case-sensitive substrings)."""
    from fcpo.metrics.candidates import text_choice

    choice = text_choice(texts, candidate_titles)
    valid = choice >= 0
    if targets is None:
        hit = np.zeros(len(choice), dtype=bool)
    else:
        if len(targets) != len(texts):
            raise ValueError(f"got {len(texts)} answers but {len(targets)} targets")
        hit = valid & np.array([str(g) in str(t) for g, t in zip(targets, texts)], dtype=bool)
    return ParsedAnswers(choice, valid, hit)
