"""Conformance kit and hypothesis strategies for plugin authors."""
