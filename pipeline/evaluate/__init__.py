"""Comparing finished runs (`pipe evaluate`)."""
