"""IDEAL's rounds: generator training, materialisation, single-pass labelling, distillation."""
