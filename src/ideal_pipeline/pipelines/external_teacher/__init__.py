"""Bring your own teacher: a model file or an HTTP endpoint you name, instead of our victim."""
