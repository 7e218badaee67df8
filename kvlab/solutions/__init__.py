"""Chapter 7's solutions notebook, shipped as package data instead of beside the exercises.

``kvlab solutions [DIR]`` (or ``python -m kvlab solutions``) writes it out; see docs/workshop.md.
"""
