"""CPU demonstration of GRPO-λ against GRPO through verl's advantage and loss code."""
