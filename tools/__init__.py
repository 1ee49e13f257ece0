"""Developer tooling that is not part of the installed package (it uses private Triton APIs)."""
