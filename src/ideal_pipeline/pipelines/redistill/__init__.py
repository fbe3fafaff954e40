"""Query-free re-distillation of a student on the whole labelled pool."""
