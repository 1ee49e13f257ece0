"""Negative samplers: how the negative term is formed from row statistics."""
