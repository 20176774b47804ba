"""Screens of the terminal client."""
