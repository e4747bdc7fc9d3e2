"""Tables and prompt sources: the schema, the arithmetic generator, files, Hub datasets, MBPP, splits."""
