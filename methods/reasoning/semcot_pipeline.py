"""SemCoT at evaluation: the frozen teacher answering after ``[question; implicit states;
answer prompt]``.

:class:`TeacherAnswers` is the teacher alone under an answer prompt (the ``teacher-direct``
row, :class:`methods.reasoning.cot_distill.TeacherDirectRow`); :class:`SemCoTPipeline` puts
the generator's implicit states in front of that prompt (``semcot``'s evaluation, built by
:class:`methods.reasoning.semcot.SemCoT`). The method and the reasons for the prompt are in
:mod:`methods.reasoning.semcot`; the state ablation that reuses these steps is
:func:`methods.reasoning.semcot_ablation.implicit_state_ablation`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from methods.reasoning.semcot import Generator


class TeacherAnswers:
    """The frozen teacher answering ``[question; answer_prompt]`` greedily; ``answer(context,
    max_new_tokens, until) -> (text, n_tokens)`` for lm-eval. The lm-eval context ends with
    ``"\nAnswer:"``, which is replaced by ``answer_prompt``. Also the ``teacher-direct`` row.

    The steps are public so that a diagnostic can put other states in the same place
    (:func:`methods.reasoning.semcot_ablation.implicit_state_ablation`): :meth:`encode`
    (context -> question and prompt ids), :meth:`states` (the implicit states, ``None``
    here), :meth:`input_embeds` (what the teacher reads) and :meth:`generate_from`."""

    def __init__(self, teacher: Any, tokenizer: Any, answer_prompt: str) -> None:
        self.teacher, self.tokenizer, self.answer_prompt = teacher, tokenizer, answer_prompt

    def states(self, query_ids: list[int]) -> torch.Tensor | None:
        return None  # SemCoT inserts its implicit states here

    def encode(self, context: str) -> tuple[list[int], list[int]]:
        """``(question ids, answer-prompt ids)`` of an lm-eval context; a context without
        the ``"\nAnswer:"`` suffix is all question (no answer prompt)."""
        from methods.reasoning.cot_distill import ANSWER_PROMPT

        query, sep, _ = context.rpartition(ANSWER_PROMPT)
        query = query if sep else context
        tok = self.tokenizer
        p_ids = tok(self.answer_prompt, add_special_tokens=False)["input_ids"] if sep else []
        return list(tok(query)["input_ids"]), list(p_ids)

    def input_embeds(self, query_ids: list[int], states: torch.Tensor | None,
                     prompt_ids: list[int]) -> torch.Tensor:
        """``[1, S, H]``: the question's token embeddings, then ``states`` (``[k, H]``, in
        the teacher's input-embedding space), then the answer prompt's embeddings."""
        emb = self.teacher.get_input_embeddings()
        device = emb.weight.device
        parts = [emb(torch.tensor(query_ids, device=device))]
        if states is not None:
            parts.append(states.to(device=device, dtype=emb.weight.dtype))
        if prompt_ids:
            parts.append(emb(torch.tensor(prompt_ids, device=device)))
        return torch.cat(parts)[None]

    @torch.no_grad()
    def generate_from(self, query_ids: list[int], states: torch.Tensor | None,
                      prompt_ids: list[int], max_new_tokens: int, until: list[str]
                      ) -> tuple[str, int]:
        """The teacher's greedy answer after ``[question; states; prompt]``: (text, tokens)."""
        from lm_eval.models.utils_hf import stop_sequences_criteria

        from bench.core.generation import stop_ids

        tok = self.tokenizer
        embeds = self.input_embeds(query_ids, states, prompt_ids)
        out = self.teacher.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device),
            max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
            top_k=None, eos_token_id=stop_ids(self.teacher, tok), pad_token_id=tok.pad_token_id,
            stopping_criteria=stop_sequences_criteria(tok, until, 0, 1))
        new = out[0].tolist()
        return tok.decode(new, skip_special_tokens=True), len(new)

    @torch.no_grad()
    def answer_logits(self, query_ids: list[int], states: torch.Tensor | None,
                      prompt_ids: list[int], answer_ids: list[int]) -> torch.Tensor:
        """``[T, V]`` teacher logits predicting each of ``answer_ids`` (teacher forcing)
        after ``[question; states; prompt]``: the positions the answer is read from."""
        emb = self.teacher.get_input_embeddings()
        head = self.input_embeds(query_ids, states, prompt_ids)
        tail = emb(torch.tensor(answer_ids, device=head.device))[None].to(head.dtype)
        embeds = torch.cat([head, tail], 1)
        logits = self.teacher(inputs_embeds=embeds,
                              attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long,
                                                        device=embeds.device)).logits[0]
        return logits[head.shape[1] - 1: embeds.shape[1] - 1].float()

    @torch.no_grad()
    def answer(self, context: str, max_new_tokens: int, until: list[str]) -> tuple[str, int]:
        q_ids, p_ids = self.encode(context)
        return self.generate_from(q_ids, self.states(q_ids), p_ids, max_new_tokens, until)


class SemCoTPipeline(TeacherAnswers):
    """Generator + frozen teacher at inference: ``[question; k implicit states; answer
    prompt]`` into the teacher."""

    def __init__(self, generator: Generator, teacher: Any, tokenizer: Any, k: int,
                 answer_prompt: str) -> None:
        super().__init__(teacher, tokenizer, answer_prompt)
        self.generator, self.k = generator.eval(), k

    def states(self, query_ids: list[int]) -> torch.Tensor | None:
        return self.generator([query_ids], self.k)[0]
