"""The minimal reference trainer."""
