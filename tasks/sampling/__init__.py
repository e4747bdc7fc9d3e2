"""How each iteration spends its samples: which prompts get a second, hinted pass (hints.py) and how
many samples each prompt gets within the iteration's budget (allocation.py). Pure functions over
Polars frames; the generate stage calls them."""
