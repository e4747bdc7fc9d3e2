"""The recipe: one typed config model per concern, loading, and checks across sections."""
