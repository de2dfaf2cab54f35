"""``fkl``: same-tokenizer forward-KL distillation, the reference point for the
cross-tokenizer methods.

Teacher: SmolLM2-135M-Instruct (the student's own tokenizer; ``--teacher`` may name any model
with that vocabulary, and one with another vocabulary is refused before any work). Loss:
``CE + kd_weight · KL(p_teacher ‖ q_student)`` at every text token, on the teacher's cached
top k plus one rest class (:class:`~methods.lm.common.SharedVocabularyKD`; a lower bound of
the full KL, exact at k = V). With the default student being the teacher itself, the KL term
keeps the fine-tuned student close to the pretrained model (it is 0 at the start), which is
what same-tokenizer KD can offer here: no packaged teacher with the SmolLM2 vocabulary is
stronger than the student. With ``--set student_layers=8`` it is ordinary layer-dropped KD.
"""

from __future__ import annotations

from methods.lm.common import SharedVocabularyKD

REGISTRY = [
    {"name": "fkl", "suites": ["lm"], "target": "ForwardKL",
     "summary": "CE + forward KL to a same-tokenizer teacher (SmolLM2-135M-Instruct), top-k "
                "+ rest",
     "citation": "Hinton et al. 2015, arXiv:1503.02531"},
]


class ForwardKL(SharedVocabularyKD):
    loss = "fkl"
