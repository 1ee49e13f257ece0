"""Loss functions: one module per loss family."""
