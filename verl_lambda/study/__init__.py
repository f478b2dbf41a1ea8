"""``verl-lambda study``: when does the GRPO-λ trace itself (not the clamp) change learning?

A credit-assignment study on a CPU: long responses whose reward depends only on a few decisive
tokens at a controlled position, every trace reading against GRPO and the clamp alone, paired by
seed, trained through verl's own advantage and policy-loss code (docs/credit-study.md).
"""
